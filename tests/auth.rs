//! Authentication, roles and permissions on real `enigmadb server` processes: strangers, wrong
//! passwords and dropped roles are refused with typed errors and read or write nothing; a role
//! does only what it was granted; grants survive a restart; failed logins do not hold up a
//! good client; a node with authentication on and no way to log in refuses to start; in a
//! cluster of three, roles and grants made on one node hold on every node, changes reach the
//! others within the caches' validity, survive a node's kill and restart, and the first
//! superuser is created once however many nodes were given an initial password.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::cluster::{self, await_until, Setup, TestCluster};
use common::{query, query_at, query_ok, refused_start, scratch_dir, Server};
use enigmadb::auth::INITIAL_PASSWORD_ENV;
use wire::client::{Client, ClientError, ClientOptions};
use wire::protocol::{AdminRequest, ErrorCode, PlainCredentials, QueryResult, Request, Response};
use wire::{Consistency, Value};

const SUPERUSER_PASSWORD: &str = "first-superuser-pw";

/// A config file turning authentication on, with the first superuser's password in a file.
fn auth_config(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let password = dir.join("initial-password");
    std::fs::write(&password, format!("{SUPERUSER_PASSWORD}\n")).unwrap();
    let config = dir.join("auth.toml");
    let text = format!(
        "authenticator = \"password\"\ninitial_password_file = \"{}\"\nroles_validity_ms = 200\npermissions_validity_ms = 200\n",
        password.display()
    );
    std::fs::write(&config, text).unwrap();
    config
}

fn start(dir: &Path, config: &Path) -> Server {
    Server::start(&dir.join("data"), 2, &["--config", config.to_str().unwrap()])
}

/// A fresh node with authentication on: its scratch directory, config file and process.
fn start_fresh(name: &str) -> (PathBuf, PathBuf, Server) {
    let dir = scratch_dir(name);
    let config = auth_config(&dir);
    let server = start(&dir, &config);
    (dir, config, server)
}

fn login(addr: SocketAddr, user: &str, password: &str) -> Result<Client, ClientError> {
    let options =
        ClientOptions { credentials: Some(PlainCredentials::new(user, password)), ..ClientOptions::default() };
    Client::connect_with(addr, options)
}

fn superuser(addr: SocketAddr) -> Client {
    login(addr, "enigmadb", SUPERUSER_PASSWORD).expect("the first superuser logs in")
}

fn refused_code(result: Result<Client, ClientError>) -> ErrorCode {
    match result {
        Ok(_) => panic!("the login was accepted"),
        Err(ClientError::Server(e)) if e.code != ErrorCode::BadCredentials => panic!("refused with {e:?}"),
        Err(ClientError::Server(e)) => e.code,
        Err(other) => panic!("expected a typed refusal, got {other}"),
    }
}

/// Every row of `table`, page by page (a table may hold more than one page of rows).
fn row_count(client: &mut Client, table: &str) -> usize {
    let rows = client.query_paged(&format!("SELECT * FROM {table}"), 1000).expect("SELECT *");
    rows.collect::<Result<Vec<_>, _>>().expect("every page of rows").len()
}

fn text_column(result: Result<QueryResult, wire::protocol::ErrorResponse>, column: usize) -> Vec<String> {
    match result {
        Ok(QueryResult::Rows(rows)) => rows
            .rows
            .iter()
            .map(|r| match &r[column] {
                Some(Value::Text(t)) => t.clone(),
                other => panic!("not text: {other:?}"),
            })
            .collect(),
        other => panic!("expected rows: {other:?}"),
    }
}

#[test]
fn strangers_are_refused_and_roles_do_only_what_they_were_granted() {
    let (dir, config, server) = start_fresh("auth-roles");
    let addr = server.addr;

    // No credentials, a wrong password, an unknown role, a malformed token: typed refusals.
    match Client::connect(addr) {
        Err(ClientError::CredentialsRequired { authenticator }) => {
            assert_eq!(authenticator, "org.apache.cassandra.auth.PasswordAuthenticator")
        }
        other => panic!("a client without credentials: {:?}", other.err()),
    }
    assert_eq!(refused_code(login(addr, "enigmadb", "wrong")), ErrorCode::BadCredentials);
    assert_eq!(refused_code(login(addr, "nobody", "x")), ErrorCode::BadCredentials);
    let mut raw = common::RawConnection::connect(addr).unwrap();
    raw.send(&Request::Startup { version: wire::frame::PROTOCOL_VERSION, client: "raw".into() }, 1);
    assert!(matches!(raw.receive(), Some((1, Response::Authenticate { .. }))));
    // A query before logging in is not served; bad SASL bytes end the connection.
    raw.send(&Request::Query { text: "SELECT * FROM t".into(), params: Default::default() }, 2);
    assert!(matches!(raw.receive(), Some((2, Response::Error(e))) if e.code == ErrorCode::Protocol));
    raw.send(&Request::AuthResponse { token: b"\xff\0\0".to_vec() }, 3);
    assert!(matches!(raw.receive(), Some((3, Response::Error(e))) if e.code == ErrorCode::BadCredentials));
    assert!(raw.receive().is_none(), "the connection is closed after a failed login");

    let mut admin = superuser(addr);
    query_ok(&mut admin, "CREATE TABLE t (k int PRIMARY KEY, v text)");
    query_ok(&mut admin, "INSERT INTO t (k, v) VALUES (1, 'one')");
    query_ok(&mut admin, "CREATE ROLE reader WITH PASSWORD = 'r-pw' AND LOGIN = true");
    query_ok(&mut admin, "GRANT SELECT ON TABLE t TO reader");
    assert_eq!(text_column(query(&mut admin, "LIST ROLES"), 0), vec!["enigmadb", "reader"]);
    assert_eq!(text_column(query(&mut admin, "LIST ALL PERMISSIONS OF reader"), 2), vec!["SELECT"]);
    // The auth tables are not the clients'.
    let hidden = query(&mut admin, "SELECT * FROM enigmadb_auth_roles").unwrap_err();
    assert_eq!(hidden.code, ErrorCode::Invalid, "{hidden:?}");

    // SELECT but no MODIFY: reads, cannot write, nothing written.
    let mut reader = login(addr, "reader", "r-pw").expect("reader logs in");
    assert_eq!(row_count(&mut reader, "t"), 1);
    let refused = query(&mut reader, "INSERT INTO t (k, v) VALUES (2, 'two')").unwrap_err();
    assert_eq!(refused.code, ErrorCode::Unauthorized);
    assert!(refused.message.contains("MODIFY"), "{}", refused.message);
    assert_eq!(row_count(&mut admin, "t"), 1, "the refused write wrote nothing");
    for statement in ["CREATE ROLE x WITH PASSWORD = 'x'", "GRANT MODIFY ON TABLE t TO reader", "DROP TABLE t"] {
        let e = query(&mut reader, statement).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthorized, "{statement}: {e:?}");
    }
    let e = reader.admin(AdminRequest::Status).unwrap_err();
    assert!(matches!(e.server_code(), Some(ErrorCode::Unauthorized)), "{e}");
    assert!(admin.admin(AdminRequest::Status).is_ok(), "a superuser runs admin commands");

    // A superuser grants MODIFY: the reader writes once its shard's cache has expired.
    query_ok(&mut admin, "GRANT MODIFY ON ALL KEYSPACES TO reader");
    await_until("the grant reaches the reader's shard", || {
        query(&mut reader, "INSERT INTO t (k, v) VALUES (2, 'two')").is_ok()
    });
    assert_eq!(row_count(&mut admin, "t"), 2);

    // A dropped role can no longer log in, nor use its open connection.
    query_ok(&mut admin, "DROP ROLE reader");
    assert_eq!(refused_code(login(addr, "reader", "r-pw")), ErrorCode::BadCredentials);
    await_until(
        "the dropped role is refused on its open connection",
        || matches!(query(&mut reader, "SELECT * FROM t"), Err(e) if e.code == ErrorCode::Unauthorized),
    );

    // Grants survive a restart.
    query_ok(&mut admin, "CREATE ROLE writer WITH PASSWORD = 'w-pw' AND LOGIN = true");
    query_ok(&mut admin, "GRANT MODIFY ON t TO writer");
    drop(admin);
    common::stop_cleanly(server);
    let server = start(&dir, &config);
    let mut writer = login(server.addr, "writer", "w-pw").expect("writer logs in after the restart");
    query_ok(&mut writer, "INSERT INTO t (k, v) VALUES (3, 'three')");
    assert_eq!(query(&mut writer, "SELECT * FROM t").unwrap_err().code, ErrorCode::Unauthorized);
    common::stop_cleanly(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_thousand_failed_logins_do_not_stop_a_good_client() {
    let (dir, _, server) = start_fresh("auth-failed-logins");
    let addr = server.addr;
    let mut good = superuser(addr);
    query_ok(&mut good, "CREATE TABLE kv (k int PRIMARY KEY, v int)");
    let attackers: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..250 {
                    let code = refused_code(login(addr, "enigmadb", &format!("guess-{t}-{i}")));
                    assert_eq!(code, ErrorCode::BadCredentials);
                }
            })
        })
        .collect();
    let mut written = 0;
    while attackers.iter().any(|a| !a.is_finished()) {
        query_ok(&mut good, &format!("INSERT INTO kv (k, v) VALUES ({written}, {written})"));
        written += 1;
    }
    for attacker in attackers {
        attacker.join().expect("every failed login got a typed refusal");
    }
    assert_eq!(row_count(&mut good, "kv"), written);
    assert!(written > 0);
    drop(good);
    common::stop_cleanly(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_node_with_authentication_and_no_superuser_refuses_to_start() {
    let dir = scratch_dir("auth-no-superuser");
    let stderr = refused_start(&dir, &["--authenticator", "password", "--listen", "127.0.0.1:0"]);
    assert!(stderr.contains("ENIGMADB_INITIAL_PASSWORD"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_old_client_keeps_working_without_authentication() {
    let dir = scratch_dir("auth-old-client");
    let server = Server::start(&dir, 1, &[]);
    let mut raw = common::RawConnection::connect(server.addr).unwrap();
    // A version 2 client: its frames and STARTUP say 2, and the answers come in version 2.
    raw.send_versioned(2, &Request::Startup { version: 2, client: "old".into() }, 1);
    assert!(matches!(raw.receive_version(), Some((2, 1, Response::Ready { version: 2, .. }))));
    common::stop_cleanly(server);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// A cluster of three nodes with authentication on.

/// The config file of every node of an authenticated cluster: the auth tables on all three
/// nodes (`auth_replication_factor = 3`, Cassandra's system_auth at RF 3), caches of 200 ms,
/// and, with `password_file`, the first superuser's password in a file (else each node takes
/// its own ENIGMADB_INITIAL_PASSWORD).
fn cluster_auth_config(dir: &Path, password_file: bool) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut text = String::from(
        "authenticator = \"password\"\nauth_replication_factor = 3\nroles_validity_ms = 200\npermissions_validity_ms = 200\n",
    );
    if password_file {
        let password = dir.join("initial-password");
        std::fs::write(&password, format!("{SUPERUSER_PASSWORD}\n")).unwrap();
        text.push_str(&format!("initial_password_file = \"{}\"\n", password.display()));
    }
    let config = dir.join("auth-cluster.toml");
    std::fs::write(&config, text).unwrap();
    config
}

/// Starts an `n`-node cluster whose nodes all run with `config`, `env(i)` the environment of
/// node i; the cluster's admin commands log in as `enigmadb` with `admin_password`.
fn start_auth_cluster(
    name: &str,
    n: usize,
    config: &Path,
    admin_password: &str,
    env: &dyn Fn(usize) -> Vec<(String, String)>,
) -> TestCluster {
    let config = config.to_str().unwrap();
    // A config file turns the harness's default memory budgets off: give them as flags.
    let budgets = ["--memtable-budget", common::TEST_BUDGET, "--cache-budget", common::TEST_BUDGET];
    // Every node after the first bootstraps (the auth tables are data): one at a time, each
    // announcing JOINING for a second rather than the default five.
    let extra: Vec<&str> = ["--config", config, "--ring-delay-ms", "1000"].into_iter().chain(budgets).collect();
    let admin = ["-u", "enigmadb", "-p", admin_password];
    let setup = Setup { extra: &extra, env: Some(env), admin: &admin, one_at_a_time: true, ..Setup::default() };
    TestCluster::start_configured(name, n, setup)
}

/// Each row of a result as one line of text (`reader | false | true`).
fn lines(result: Result<QueryResult, wire::protocol::ErrorResponse>) -> Vec<String> {
    let cell = |v: &Option<Value>| match v {
        Some(Value::Text(t)) => t.clone(),
        Some(Value::Boolean(b)) => b.to_string(),
        Some(Value::Int(n)) => n.to_string(),
        other => format!("{other:?}"),
    };
    match result {
        Ok(QueryResult::Rows(rows)) => {
            rows.rows.iter().map(|r| r.iter().map(cell).collect::<Vec<_>>().join(" | ")).collect()
        }
        other => panic!("expected rows: {other:?}"),
    }
}

/// LIST ROLES and LIST ALL PERMISSIONS as a superuser sees them through the node at `addr`;
/// `None` while it cannot log in there.
fn auth_view(addr: SocketAddr, password: &str) -> Option<(Vec<String>, Vec<String>)> {
    let mut admin = login(addr, "enigmadb", password).ok()?;
    let roles = query(&mut admin, "LIST ROLES").ok()?;
    let permissions = query(&mut admin, "LIST ALL PERMISSIONS").ok()?;
    Some((lines(Ok(roles)), lines(Ok(permissions))))
}

/// Waits until every node in `nodes` lists the roles and permissions `expected`.
fn await_agreement(cluster: &TestCluster, nodes: &[usize], expected: &(Vec<String>, Vec<String>), what: &str) {
    for &i in nodes {
        let deadline = std::time::Instant::now() + cluster::CONVERGE;
        loop {
            let seen = auth_view(cluster.addr(i), SUPERUSER_PASSWORD);
            if seen.as_ref() == Some(expected) {
                break;
            }
            let late = std::time::Instant::now() > deadline;
            assert!(!late, "node {i} never listed {what}: {expected:?}; it lists {seen:?}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

fn view(roles: &[&str], permissions: &[&str]) -> (Vec<String>, Vec<String>) {
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    (owned(roles), owned(permissions))
}

/// Whether a statement was refused as Unauthorized with a message naming `permission`.
fn refused_for(result: Result<QueryResult, wire::protocol::ErrorResponse>, permission: &str) -> bool {
    matches!(result, Err(e) if e.code == ErrorCode::Unauthorized && e.message.contains(permission))
}

#[test]
fn permissions_agree_on_every_node_of_a_three_node_cluster_and_survive_a_restart() {
    let config_dir = scratch_dir("auth-cluster-config");
    let config = cluster_auth_config(&config_dir, true);
    let mut cluster = start_auth_cluster("auth-cluster", 3, &config, SUPERUSER_PASSWORD, &|_| Vec::new());

    // Node 1, as the first superuser: a table, a reader and a writer.
    let mut admin = superuser(cluster.addr(1));
    query_ok(&mut admin, "CREATE TABLE t (k int PRIMARY KEY, v text) WITH replication_factor = 3");
    await_until("a write at ALL reaches every node (each knows table t)", || {
        query_at(&mut admin, "INSERT INTO t (k, v) VALUES (1, 'one')", Consistency::All).is_ok()
    });
    query_ok(&mut admin, "CREATE ROLE reader WITH PASSWORD = 'r-pw' AND LOGIN = true");
    query_ok(&mut admin, "GRANT SELECT ON TABLE t TO reader");
    query_ok(&mut admin, "CREATE ROLE writer WITH PASSWORD = 'w-pw' AND LOGIN = true");
    query_ok(&mut admin, "GRANT MODIFY ON TABLE t TO writer");
    let granted = view(
        &["enigmadb | true | true", "reader | false | true", "writer | false | true"],
        &["reader | <table t> | SELECT", "writer | <table t> | MODIFY"],
    );
    await_agreement(&cluster, &[1, 2, 3], &granted, "the roles and grants made on node 1");

    // Nodes 2 and 3: each role logs in there and does what it was granted, only that.
    for i in [2, 3] {
        let addr = cluster.addr(i);
        let mut reader = login(addr, "reader", "r-pw").unwrap_or_else(|e| panic!("reader logs in on node {i}: {e}"));
        let rows = lines(query(&mut reader, "SELECT k, v FROM t"));
        assert!(rows.contains(&"1 | one".to_string()), "node {i}: {rows:?}");
        let refused = query(&mut reader, &format!("INSERT INTO t (k, v) VALUES ({i}0, 'reader')"));
        assert!(refused_for(refused.clone(), "MODIFY"), "node {i}: {refused:?}");
        let mut writer = login(addr, "writer", "w-pw").unwrap_or_else(|e| panic!("writer logs in on node {i}: {e}"));
        query_ok(&mut writer, &format!("INSERT INTO t (k, v) VALUES ({i}, 'by writer on node {i}')"));
        assert!(refused_for(query(&mut writer, "SELECT * FROM t"), "SELECT"), "node {i}: writer has no SELECT");
        assert_eq!(refused_code(login(addr, "reader", "w-pw")), ErrorCode::BadCredentials, "node {i}");
        assert_eq!(refused_code(login(addr, "enigmadb", "r-pw")), ErrorCode::BadCredentials, "node {i}");
    }
    // The reader's refused writes wrote nothing; the writer's two did.
    let rows = lines(query_at(&mut admin, "SELECT k FROM t", Consistency::All));
    assert_eq!(rows.len(), 3, "{rows:?}");

    // Changes made on node 2 reach connections already open on nodes 1 and 3 once their
    // shards' caches expire, and logins there at once.
    let mut readers: Vec<(usize, Client)> =
        [1, 3].into_iter().map(|i| (i, login(cluster.addr(i), "reader", "r-pw").expect("reader logs in"))).collect();
    let mut writers: Vec<(usize, Client)> =
        [1, 3].into_iter().map(|i| (i, login(cluster.addr(i), "writer", "w-pw").expect("writer logs in"))).collect();
    let mut admin2 = superuser(cluster.addr(2));
    query_ok(&mut admin2, "REVOKE SELECT ON TABLE t FROM reader");
    query_ok(&mut admin2, "DROP ROLE writer");
    for (i, reader) in &mut readers {
        await_until(&format!("the revoked SELECT is refused on node {i}"), || {
            refused_for(query(reader, "SELECT * FROM t"), "SELECT")
        });
    }
    for (i, writer) in &mut writers {
        let addr = cluster.addr(*i);
        // DROP ROLE deletes the role's grants, then its row: two writes, each reaching node i
        // in its time. Once the row is gone there, logins are refused at once, the open
        // connection once its shard's cache expires.
        await_until(
            &format!("the dropped writer cannot log in on node {i}"),
            || matches!(login(addr, "writer", "w-pw"), Err(ClientError::Server(e)) if e.code == ErrorCode::BadCredentials),
        );
        await_until(&format!("the dropped writer's open connection is refused on node {i}"), || {
            // A write that adds no row, should it still be allowed.
            let refused = query(writer, "DELETE FROM t WHERE k = 99");
            matches!(refused, Err(e) if e.code == ErrorCode::Unauthorized && e.message.contains("does not exist"))
        });
    }
    let revoked = view(&["enigmadb | true | true", "reader | false | true"], &[]);
    await_agreement(&cluster, &[1, 2, 3], &revoked, "the roles and grants after node 2's changes");

    // A grant made on node 3, then node 2 killed (-9) and started again: the same roles and
    // grants there, and they work there.
    let mut admin3 = superuser(cluster.addr(3));
    query_ok(&mut admin3, "GRANT SELECT ON ALL KEYSPACES TO reader");
    let regranted = view(&["enigmadb | true | true", "reader | false | true"], &["reader | <all keyspaces> | SELECT"]);
    await_agreement(&cluster, &[1, 2, 3], &regranted, "the grant made on node 3");
    drop((admin, admin2, admin3, readers, writers));
    cluster.restart(2);
    cluster.await_up(3);
    assert_eq!(auth_view(cluster.addr(2), SUPERUSER_PASSWORD).as_ref(), Some(&regranted), "node 2 after its restart");
    let mut reader = login(cluster.addr(2), "reader", "r-pw").expect("reader logs in on the restarted node");
    assert_eq!(lines(query_at(&mut reader, "SELECT k FROM t", Consistency::All)).len(), 3);
    assert!(refused_for(query(&mut reader, "INSERT INTO t (k, v) VALUES (7, 'x')"), "MODIFY"));
    assert_eq!(refused_code(login(cluster.addr(2), "writer", "w-pw")), ErrorCode::BadCredentials);

    // With nodes 1 and 3 gone, node 2 answers from its own replicas of the auth tables.
    drop(reader);
    cluster.kill(1);
    cluster.kill(3);
    let admin_flags: Vec<String> = ["-u", "enigmadb", "-p", SUPERUSER_PASSWORD].map(String::from).to_vec();
    let alone = cluster.addr(2);
    await_until("node 2 sees nodes 1 and 3 down", || {
        let Some(status) = cluster::admin_status_as(alone, &admin_flags) else { return false };
        cluster::rows(&status).iter().filter(|n| n["state"] == "DN").count() == 2
    });
    assert_eq!(auth_view(alone, SUPERUSER_PASSWORD).as_ref(), Some(&regranted), "node 2 alone");
    let mut reader = login(alone, "reader", "r-pw").expect("reader logs in on node 2 alone");
    assert!(refused_for(query(&mut reader, "INSERT INTO t (k, v) VALUES (7, 'x')"), "MODIFY"));
    drop(reader);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&config_dir);
}

#[test]
fn the_first_superuser_is_created_once_when_every_node_has_an_initial_password() {
    let config_dir = scratch_dir("auth-cluster-bootstrap-config");
    let config = cluster_auth_config(&config_dir, false);
    let password = |i: usize| format!("initial-password-of-node-{i}");
    let env = move |i: usize| vec![(INITIAL_PASSWORD_ENV.to_owned(), password(i))];
    // Node 1 starts first, alone: its password is the cluster's; nodes 2 and 3 join a cluster
    // that has a superuser and leave it as it is.
    let mut cluster = start_auth_cluster("auth-cluster-bootstrap", 3, &config, &password(1), &env);
    let one = view(&["enigmadb | true | true"], &[]);
    let check = |cluster: &TestCluster, when: &str| {
        for i in 1..=3 {
            let addr = cluster.addr(i);
            assert_eq!(auth_view(addr, &password(1)).as_ref(), Some(&one), "node {i} {when}: one enigmadb role");
            for other in [2, 3] {
                let refused = refused_code(login(addr, "enigmadb", &password(other)));
                assert_eq!(refused, ErrorCode::BadCredentials, "node {i} {when}: node {other}'s password");
            }
        }
    };
    check(&cluster, "after the start");
    // A node started again with its own initial password (killed, then started) changes nothing.
    cluster.restart(3);
    check(&cluster, "after node 3's restart");
    drop(cluster);
    let _ = std::fs::remove_dir_all(&config_dir);
}

#[test]
fn a_node_that_starts_without_the_clusters_roles_does_not_replace_the_first_superuser() {
    let config_dir = scratch_dir("auth-cluster-late-config");
    let config = cluster_auth_config(&config_dir, false);
    let password = |i: usize| format!("initial-password-of-node-{i}");
    let env = move |i: usize| vec![(INITIAL_PASSWORD_ENV.to_owned(), password(i))];
    let cluster = start_auth_cluster("auth-cluster-late", 2, &config, &password(1), &env);
    // Node 3 skips the bootstrap (auto_bootstrap off): it starts NORMAL with empty auth
    // tables, finds no superuser in them and creates `enigmadb` with its own password. That
    // creation is written below the first one's timestamp: it changes nothing where the
    // first one is, and a repair brings the first one to node 3.
    let mut command = common::enigmadb();
    command.env(INITIAL_PASSWORD_ENV, password(3));
    let listen = format!("{}:0", cluster::node_host(3));
    let flags = cluster.flags(3, &["--auto-bootstrap", "false"]);
    let node3 = Server::start_command(command, &listen, &listen, &cluster.node_dir(3), 1, &flags);
    let admin: Vec<String> = ["-u", "enigmadb", "-p", &password(1)].map(String::from).to_vec();
    await_until("node 1 sees 3 nodes up", || cluster::count_up_as(cluster.addr(1), &admin) == 3);
    let one = view(&["enigmadb | true | true"], &[]);
    for i in [1, 2] {
        let addr = cluster.addr(i);
        assert_eq!(auth_view(addr, &password(1)).as_ref(), Some(&one), "node {i} keeps the first superuser");
        assert_eq!(refused_code(login(addr, "enigmadb", &password(3))), ErrorCode::BadCredentials, "node {i}");
    }
    let out = common::enigmadb()
        .args(["admin", "repair", "--host", &cluster.addr(1).to_string(), "--json"])
        .args(&admin)
        .output()
        .expect("running enigmadb admin repair");
    assert!(out.status.success(), "repair: {}", common::text(&out.stderr));
    for addr in [cluster.addr(1), cluster.addr(2), node3.addr] {
        assert_eq!(auth_view(addr, &password(1)).as_ref(), Some(&one), "{addr} after the repair");
        for other in [2, 3] {
            assert_eq!(refused_code(login(addr, "enigmadb", &password(other))), ErrorCode::BadCredentials, "{addr}");
        }
    }
    drop(node3);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&config_dir);
}
