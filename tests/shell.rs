//! `enigmadb shell` against a real `enigmadb server`: `-e`, `-f` and piped input, tables as
//! cqlsh prints them, errors on stderr with a failing exit status, and the shell's own
//! CONSISTENCY, PAGING, TRACING, HELP and EXIT commands.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Output, Stdio};

use common::Server;

/// Runs the shell against `addr` with `args`, feeding `stdin` (closed when empty).
fn shell(addr: SocketAddr, args: &[&str], stdin: &str) -> Output {
    let mut child = common::enigmadb()
        .args(["shell", "--host", &addr.to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the shell");
    let mut input = child.stdin.take().expect("piped stdin");
    input.write_all(stdin.as_bytes()).expect("writing the shell's input");
    drop(input);
    child.wait_with_output().expect("running the shell")
}

/// A server with table `t` holding five rows in partition 'x' (c = 1..=5).
fn server_with_rows(name: &str) -> (std::path::PathBuf, Server) {
    let dir = common::scratch_dir(name);
    let server = Server::start(&dir, 1, &[]);
    let mut client = common::connect(server.addr);
    common::query_ok(
        &mut client,
        "CREATE TABLE t (p text, c int, v text, b blob, ts timestamp, ok boolean, PRIMARY KEY (p, c))",
    );
    for c in 1..=5 {
        common::query_ok(&mut client, &format!("INSERT INTO t (p, c, v) VALUES ('x', {c}, 'v{c}')"));
    }
    (dir, server)
}

#[test]
fn execute_prints_aligned_tables_of_every_type() {
    let (dir, server) = server_with_rows("shell-tables");
    let out = shell(
        server.addr,
        &[
            "-e",
            "INSERT INTO t (p, c, v, b, ts, ok) VALUES ('y', 1, 'hello', 0xCAFE, '2024-01-02T03:04:05.678Z', true);\
             INSERT INTO t (p, c, ok) VALUES ('y', 2, false);\
             SELECT c, v, b, ts, ok FROM t WHERE p = 'y';\
             SELECT v FROM t WHERE p = 'nobody'",
        ],
        "",
    );
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    assert_eq!(common::text(&out.stderr), "");
    let expected = concat!(
        "\n",
        " c | v     | b      | ts                              | ok\n",
        "---+-------+--------+---------------------------------+-------\n",
        " 1 | hello | 0xcafe | 2024-01-02 03:04:05.678000+0000 |  True\n",
        " 2 |  null |   null |                            null | False\n",
        "\n",
        "(2 rows)\n",
        "\n",
        "\n",
        " v\n",
        "---\n",
        "\n",
        "(0 rows)\n",
        "\n",
    );
    assert_eq!(common::text(&out.stdout), expected);
    common::stop_cleanly(server);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn errors_go_to_stderr_and_make_the_exit_status_non_zero() {
    let (dir, server) = server_with_rows("shell-errors");
    let out = shell(
        server.addr,
        &[
            "-e",
            "SELECT * FORM t; SELECT * FROM nope; INSERT INTO t (p, c) VALUES ('x', 'one'); CONSISTENCY SOME;\
             SELECT c FROM t WHERE p = 'x' AND c = 3;",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{}", common::text(&out.stderr));
    let stderr = common::text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines[0], "SyntaxException: line 1:10 mismatched input 'FORM' expecting 'FROM'");
    assert!(lines[1].starts_with("InvalidRequest: ") && lines[1].contains("nope"), "{stderr}");
    assert!(
        lines[2].starts_with("InvalidRequest: ") && lines[2].contains("Invalid STRING constant ('one')"),
        "{stderr}"
    );
    assert!(lines[3].starts_with("Improper CONSISTENCY command"), "{stderr}");
    assert_eq!(lines[4], "error: 4 of 5 statements failed");
    // Statements after a failed one still run, as in cqlsh.
    assert_eq!(common::text(&out.stdout), "\n c\n---\n 3\n\n(1 rows)\n\n");

    // Every statement succeeded: exit status 0.
    let out = shell(server.addr, &["-e", "SELECT c FROM t WHERE p = 'x' AND c = 3"], "");
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    common::stop_cleanly(server);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_file_runs_statements_across_lines_with_comments_and_quoted_semicolons() {
    let (dir, server) = server_with_rows("shell-file");
    let script = dir.join("script.cql");
    std::fs::write(
        &script,
        "-- a comment; not a statement\n\
         CONSISTENCY QUORUM\n\
         INSERT INTO t (p, c, v)\n\
           VALUES ('z', 1, 'semi;colon');  /* ; */ INSERT INTO t (p, c, v) VALUES ('z', 2, 'it''s');\n\
         SELECT c, v\n\
         FROM t\n\
         WHERE p = 'z';\n",
    )
    .expect("writing the script");
    let out = shell(server.addr, &["-f", script.to_str().expect("utf-8 path")], "");
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let expected = concat!(
        "Consistency level set to QUORUM.\n",
        "\n",
        " c | v\n",
        "---+------------\n",
        " 1 | semi;colon\n",
        " 2 |       it's\n",
        "\n",
        "(2 rows)\n",
        "\n",
    );
    assert_eq!(common::text(&out.stdout), expected);

    let out = shell(server.addr, &["-f", "/nonexistent/script.cql"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(common::text(&out.stderr).contains("opening /nonexistent/script.cql"), "{}", common::text(&out.stderr));
    common::stop_cleanly(server);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn consistency_and_paging_are_shell_commands() {
    let (dir, server) = server_with_rows("shell-settings");
    // Piped input: shell commands need no ';', statements may span lines, EXIT stops.
    let input = "CONSISTENCY\n\
                 consistency quorum\n\
                 CONSISTENCY\n\
                 PAGING 2\n\
                 SELECT c\n  FROM t WHERE p = 'x';\n\
                 PAGING OFF\n\
                 PAGING\n\
                 SELECT count(*) FROM t;\n\
                 CONSISTENCY TWO\n\
                 SELECT c FROM t WHERE p = 'x';\n\
                 EXIT\n\
                 SELECT * FROM never_reached;\n";
    let out = shell(server.addr, &[], input);
    let stdout = common::text(&out.stdout);
    let expected = concat!(
        "Current consistency level is ONE.\n",
        "Consistency level set to QUORUM.\n",
        "Current consistency level is QUORUM.\n",
        "Now Query paging is enabled\nPage size: 2\n",
        "\n c\n---\n 1\n 2\n",
        "\n c\n---\n 3\n 4\n",
        "\n c\n---\n 5\n",
        "\n(5 rows)\n\n",
        "Disabled Query paging.\n",
        "Query paging is currently disabled. Use PAGING ON to enable.\n",
        "\n count\n-------\n     5\n\n(1 rows)\n\n",
        "Consistency level set to TWO.\n",
    );
    assert_eq!(stdout, expected);
    // The level reaches the server: TWO cannot be met by one node.
    let stderr = common::text(&out.stderr);
    assert!(stderr.starts_with("Unavailable: "), "{stderr}");
    assert!(!stderr.contains("never_reached"), "EXIT did not stop the shell: {stderr}");
    assert_eq!(out.status.code(), Some(1), "a failed statement in piped input fails the exit status");

    let out = shell(server.addr, &["-e", "HELP"], "");
    assert!(out.status.success());
    let help = common::text(&out.stdout);
    for topic in ["CONSISTENCY", "PAGING", "EXIT", "SELECT", "BEGIN [UNLOGGED] BATCH"] {
        assert!(help.contains(topic), "HELP lacks {topic}: {help}");
    }
    common::stop_cleanly(server);
    std::fs::remove_dir_all(&dir).ok();
}

/// The rows of the tracing tables in `stdout`: (activity, source, source_elapsed).
fn trace_rows(stdout: &str) -> Vec<Vec<(String, String, u64)>> {
    let mut traces = Vec::new();
    for table in
        stdout.split("Tracing (source_elapsed: microseconds since the coordinator received the request):").skip(1)
    {
        let rows = table
            .lines()
            .skip_while(|l| !l.starts_with("--"))
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .map(|l| {
                let cells: Vec<&str> = l.split(" | ").map(str::trim).collect();
                assert_eq!(cells.len(), 3, "a trace row has three cells: {l:?}");
                (cells[0].to_owned(), cells[1].to_owned(), cells[2].parse().expect("elapsed microseconds"))
            })
            .collect();
        traces.push(rows);
    }
    traces
}

#[test]
fn tracing_prints_what_the_coordinator_did_for_each_statement() {
    let (dir, server) = server_with_rows("shell-tracing");
    let statements = "TRACING ON;\
                      INSERT INTO t (p, c, v) VALUES ('z', 1, 'traced');\
                      SELECT v FROM t WHERE p = 'z';\
                      SELECT count(*) FROM t;\
                      TRACING;\
                      TRACING OFF;\
                      SELECT v FROM t WHERE p = 'z'";
    let out = shell(server.addr, &["-e", statements], "");
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let stdout = common::text(&out.stdout);
    assert!(stdout.starts_with("Now Tracing is enabled\n"), "{stdout}");
    assert!(
        stdout.contains("Tracing is currently enabled. Use TRACING OFF to disable\nDisabled Tracing.\n"),
        "{stdout}"
    );
    // The rows still print, and only the three statements run with TRACING ON are traced.
    assert_eq!(stdout.matches(" traced\n").count(), 2, "{stdout}");
    let traces = trace_rows(&stdout);
    assert_eq!(traces.len(), 3, "{stdout}");
    let source = server.addr.to_string();
    for trace in &traces {
        assert!(trace.iter().all(|(_, s, _)| *s == source), "every step on the coordinator: {trace:?}");
        assert!(trace.windows(2).all(|w| w[0].2 <= w[1].2), "elapsed grows: {trace:?}");
        assert_eq!(trace.last().map(|r| r.0.as_str()), Some("Request complete"), "{trace:?}");
    }
    let activities = |i: usize| traces[i].iter().map(|r| r.0.clone()).collect::<Vec<_>>().join("\n");
    let insert = activities(0);
    for step in [
        "Parsing INSERT INTO t (p, c, v) VALUES ('z', 1, 'traced')",
        "Write of 1 partition update(s) at ONE",
        "on this node, the only replica",
        "Applied on this node",
    ] {
        assert!(insert.contains(step), "the INSERT's trace lacks {step:?}:\n{insert}");
    }
    let read = activities(1);
    for step in ["Parsing SELECT", "Reading 1 partition(s) of t at ONE", "Read 1 row(s) on this node"] {
        assert!(read.contains(step), "the SELECT's trace lacks {step:?}:\n{read}");
    }
    let scan = activities(2);
    // Scan steps are sized by the partitions seen (the first reads one): they add up to both.
    let scanned: usize = scan
        .lines()
        .filter_map(|l| l.strip_prefix("Scanned ")?.strip_suffix(" partition(s)")?.parse::<usize>().ok())
        .sum();
    assert!(scan.contains("Reading t in token order") && scanned == 2, "{scan}");
    common::stop_cleanly(server);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    // Port 1 on this process's loopback address: nothing listens there.
    let addr: SocketAddr = format!("{}:1", common::loopback_host()).parse().expect("an address");
    let out = shell(addr, &["-e", "SELECT * FROM t"], "");
    assert_eq!(out.status.code(), Some(1));
    let stderr = common::text(&out.stderr);
    assert!(stderr.starts_with(&format!("error: connecting to {addr}")), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = common::enigmadb().args(["shell", "-e", "SELECT 1", "-f", "x.cql"]).output().expect("running the shell");
    assert_eq!(out.status.code(), Some(2), "clap refuses -e with -f");
}
