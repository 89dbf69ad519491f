//! A node's first boot into a cluster, with real `enigmadb server` processes: a node whose data
//! directory was lost, restarted at its old peer address, refuses to start rather than come up
//! empty under a new host id, unless the operator acknowledges the loss; a new node at a new
//! address joins as before, also when it starts before its seed; without any seed answering,
//! only a node listed among its own seeds starts.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use common::cluster::{admin_status, await_until, count_up, node_host, rows, sees_up, TestCluster, PHI};
use common::{enigmadb, Server};

/// Runs `enigmadb server` on `dir` at `listen` and `peer_listen`, expecting it to refuse to
/// start: returns its stderr.
fn refused_start(dir: &Path, listen: &str, peer_listen: &str, extra: &[&str]) -> String {
    let args = [&["--shards", "1", "--listen", listen, "--peer-listen", peer_listen][..], extra].concat();
    common::refused_start(dir, &args)
}

/// The host id (as `admin status` prints it) of the node whose client address is `client`,
/// as `observer` lists it, and its state (UN, DN...).
fn listed(observer: SocketAddr, client: SocketAddr) -> Option<(String, String)> {
    let status = admin_status(observer)?;
    rows(&status).iter().find(|r| r["address"] == client.to_string()).map(|r| {
        (r["host_id"].as_str().unwrap_or_default().to_owned(), r["state"].as_str().unwrap_or_default().to_owned())
    })
}

/// A port of `host` nothing listens on now.
fn free_port(host: &str) -> SocketAddr {
    let listener = TcpListener::bind(format!("{host}:0")).expect("bind a probe listener");
    listener.local_addr().expect("a bound listener has an address")
}

#[test]
fn a_lost_data_directory_at_a_known_address_is_refused_unless_acknowledged() {
    let mut cluster = TestCluster::start("first-boot-reuse", 3);
    let seed = cluster.server(1).peer.expect("the ready line names the peer address").to_string();
    let old_peer = cluster.server(3).peer.expect("the ready line names the peer address").to_string();
    let old_client = cluster.addr(3);
    let (old_host, _) = listed(cluster.addr(1), old_client).expect("node 1 lists node 3");
    cluster.kill(3);
    let dir = cluster.node_dir(3);
    std::fs::remove_dir_all(&dir).expect("wiping node 3's data directory");

    // Same address, same seeds, no data directory: refused, naming the address, the old host
    // id and the way out; and no identity was created.
    let flags = ["--phi-convict-threshold", PHI, "--seeds", &seed];
    let listen = format!("{}:0", node_host(3));
    let stderr = refused_start(&dir, &listen, &old_peer, &flags);
    assert!(stderr.contains(&format!("a node with peer address {old_peer} already exists")), "{stderr}");
    assert!(stderr.contains(&old_host), "the old host id {old_host}: {stderr}");
    assert!(stderr.contains("--allow-address-reuse") && stderr.contains("no node.meta"), "{stderr}");
    assert!(!dir.join("node.meta").exists(), "a refused first boot creates no identity");

    // Acknowledged: it starts as a new, empty node at the old address.
    let acknowledged = [&flags[..], &["--allow-address-reuse"]].concat();
    let reused = Server::start_command(enigmadb(), &listen, &old_peer, &dir, 1, &acknowledged);
    assert_eq!(reused.peer.map(|p| p.to_string()), Some(old_peer.clone()));
    await_until("node 1 sees the new node 3 up", || sees_up(cluster.addr(1), reused.addr));
    let (new_host, _) = listed(cluster.addr(1), reused.addr).expect("node 1 lists the new node 3");
    assert_ne!(new_host, old_host, "a new host id");
    await_until("node 1 lists the old node 3 down", || {
        listed(cluster.addr(1), old_client).is_some_and(|(host, state)| host == old_host && state == "DN")
    });

    // A new node at a new address joins as before.
    let fourth = cluster.join();
    await_until("node 1 sees four nodes up", || count_up(cluster.addr(1)) == 4);
    assert!(sees_up(cluster.addr(1), cluster.addr(fourth)));
    drop(reused);
}

#[test]
fn a_new_node_started_before_its_seed_waits_for_it_and_joins() {
    let dir = common::scratch_dir("first-boot-early");
    // The seed's port, held by a stand-in until the joiner is seen trying it.
    let stand_in = TcpListener::bind(format!("{}:0", node_host(11))).expect("bind the seed's port");
    let seed_peer = stand_in.local_addr().expect("a bound listener has an address").to_string();
    stand_in.set_nonblocking(true).expect("a non-blocking listener");
    let (joiner_dir, seed) = (dir.join("node-2"), seed_peer.clone());
    let joiner = std::thread::spawn(move || {
        let flags = ["--phi-convict-threshold", PHI, "--seeds", &seed];
        let addr = format!("{}:0", node_host(12));
        Server::start_command(enigmadb(), &addr, &addr, &joiner_dir, 1, &flags)
    });
    // The joiner's shadow round reaches the seed's port; the stand-in closes the connection
    // unanswered, as a node that is not up yet would refuse it.
    await_until("the joiner tries its seed", || stand_in.accept().is_ok());
    drop(stand_in);
    let seed_flags = ["--phi-convict-threshold", PHI];
    let listen = format!("{}:0", node_host(11));
    let seed = Server::start_command(enigmadb(), &listen, &seed_peer, &dir.join("node-1"), 1, &seed_flags);
    let joiner = joiner.join().expect("the joiner started");
    await_until("the seed sees two nodes up", || count_up(seed.addr) == 2);
    assert!(sees_up(seed.addr, joiner.addr));
    drop((joiner, seed));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn without_a_seed_answering_only_a_node_among_its_own_seeds_starts() {
    let dir = common::scratch_dir("first-boot-alone");
    let host = node_host(21);
    let absent_seed = free_port(&node_host(22)).to_string();
    let listen = format!("{host}:0");
    let timeout = ["--shadow-round-timeout-ms", "1500"];
    let flags = [&timeout[..], &["--seeds", &absent_seed]].concat();
    let stderr = refused_start(&dir.join("lonely"), &listen, &listen, &flags);
    assert!(stderr.contains("no seed answered within") && stderr.contains(&absent_seed), "{stderr}");
    assert!(stderr.contains("own peer address among its seeds"), "{stderr}");
    assert!(!dir.join("lonely").join("node.meta").exists(), "a refused first boot creates no identity");

    // A seed itself: it starts alone once the others stay silent.
    let own = free_port(&host).to_string();
    let seeds = format!("{absent_seed},{own}");
    let flags = [&timeout[..], &["--seeds", &seeds]].concat();
    let server = Server::start_command(enigmadb(), &listen, &own, &dir.join("seed"), 1, &flags);
    assert_eq!(count_up(server.addr), 1);
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}
