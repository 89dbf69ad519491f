//! Authentication, roles and permissions on real `enigmadb server` processes: strangers, wrong
//! passwords and dropped roles are refused with typed errors and read or write nothing; a role
//! does only what it was granted; grants survive a restart; failed logins do not hold up a
//! good client; a node with authentication on and no way to log in refuses to start.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::cluster::await_until;
use common::{query, query_ok, refused_start, scratch_dir, Server};
use wire::client::{Client, ClientError, ClientOptions};
use wire::protocol::{AdminRequest, ErrorCode, PlainCredentials, QueryResult, Request, Response};
use wire::Value;

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
