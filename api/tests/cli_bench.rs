//! The `bourse bench` commands as a user runs them (process-level tests).
//!
//! `bourse bench http --spawn-server --runs N`: each run gets a `bourse serve` of its own
//! (the bench spawns this very binary), measured and then stopped, and the output ends with
//! the spread of the runs. `bourse bench ws --durability fsync`: the journal syncs, and
//! every subscriber still gets every trade.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// Runs `bourse bench ARGS --json` (with no admin credentials from the environment),
/// asserts it succeeded, and returns the JSON documents it printed.
fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_bourse"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .env_remove("BOURSE_ADMIN_CLIENT_ID")
        .env_remove("BOURSE_ADMIN_CLIENT_SECRET")
        .output()
        .expect("bourse bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .expect("JSON documents");
    // One document on stdout, with `--runs` too: the runs' reports and their spread.
    let [doc] = &docs[..] else {
        panic!("one JSON document: {docs:?}")
    };
    doc.clone()
}

#[test]
fn each_run_measures_a_server_of_its_own_and_the_spread_sums_them_up() {
    let doc = bench(&[
        "http",
        "--spawn-server",
        "--runs",
        "2",
        "--duration",
        "1s",
        "--clients",
        "2",
        "--no-cancel",
        "--server-worker-threads",
        "1",
    ]);
    let runs = doc["runs"].as_array().expect("the runs' reports");
    assert_eq!(runs.len(), 2, "{doc}");
    let spread = &doc["spread"];

    let urls: Vec<&str> = runs
        .iter()
        .map(|r| r["settings"]["url"].as_str().expect("url"))
        .collect();
    assert_ne!(urls[0], urls[1], "a fresh server per run: {urls:?}");
    let mut creates = Vec::new();
    for r in runs {
        assert_eq!(r["bench"], "http");
        assert_eq!(r["errors"], serde_json::json!({}), "{r}");
        let placed = r["place"]["count"].as_u64().expect("count");
        assert!(placed > 0, "{r}");
        creates.push(r["place"]["opsPerSec"].as_f64().expect("ops/s"));
        // The server's pid was known: the CPU lines name its threads.
        assert!(r["all"]["cpu"]["server"].is_object(), "{r}");
        assert!(r["createsToHealth"].is_string(), "{r}");
    }
    // Both servers are gone.
    for url in &urls {
        let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().expect("addr");
        assert!(
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
            "{url} still answers"
        );
    }

    assert_eq!(spread["runs"], 2, "{spread}");
    creates.sort_by(f64::total_cmp);
    let c = &spread["createsPerSec"];
    assert_eq!(c["min"].as_f64(), Some(creates[0]), "{spread}");
    assert_eq!(c["max"].as_f64(), Some(creates[1]), "{spread}");
    for k in ["createMsP99", "healthPerSec", "createsToHealth"] {
        let s = &spread[k];
        let (lo, mid, hi) = (s["min"].as_f64(), s["median"].as_f64(), s["max"].as_f64());
        assert!(
            lo <= mid && mid <= hi && lo.is_some_and(|v| v > 0.0),
            "{k}: {s}"
        );
    }
}

/// An open-loop run (`--rate`) reports how late the load generator's own timer woke for
/// its scheduled sends, the part of each latency that is not the server's.
#[test]
fn an_open_loop_run_reports_the_generators_timer_lateness() {
    let closed_loop = [
        "http",
        "--spawn-server",
        "--duration",
        "1s",
        "--clients",
        "2",
        "--no-cancel",
        "--no-health",
    ];
    let doc = bench(&[&closed_loop[..], &["--rate", "200"]].concat());
    let late = &doc["generatorTimerLateness"];
    let waits = late["count"].as_u64().expect("a count of waits");
    let placed = doc["place"]["count"].as_u64().expect("count");
    // At 200/s the server keeps up: nearly every send waited for its time, and every send
    // either waited or was behind schedule (queued behind its connection's last answer).
    assert!(waits > 0 && waits <= placed, "{late} of {placed}");
    let behind = doc["sendsBehindSchedule"]
        .as_u64()
        .expect("sendsBehindSchedule");
    assert_eq!(waits + behind, placed, "{doc}");
    let (p50, max) = (
        late["latencyUs_p50"].as_u64(),
        late["latencyUs_max"].as_u64(),
    );
    assert!(p50.is_some_and(|v| v > 0) && p50 <= max, "{late}");
    // A closed-loop run has no schedule, and no such figure.
    let closed = bench(&closed_loop);
    assert!(closed.get("generatorTimerLateness").is_none(), "{}", closed);
    assert!(closed.get("sendsBehindSchedule").is_none(), "{}", closed);
}

#[test]
fn the_ws_bench_with_a_syncing_journal_delivers_every_trade() {
    let subscribers = 20u64;
    let subscribers_arg = subscribers.to_string();
    let r = bench(&[
        "ws",
        "--subscribers",
        &subscribers_arg,
        "--latency-clients",
        "5",
        "--trades-per-sec",
        "200",
        "--seconds",
        "1",
        "--durability",
        "fsync",
    ]);
    assert_eq!(r["durability"], "fsync", "{r}");
    let trades = r["trades"].as_u64().expect("trades");
    assert!(trades >= 100, "{r}");
    assert_eq!(r["clients_closed_early"], 0, "{r}");
    // Each subscriber takes book, trades and ticker: at least one message per trade.
    let delivered = r["messages_delivered"].as_u64().expect("messages");
    assert!(delivered >= trades * subscribers, "{r}");
    assert!(r["latency_ms_p99"].as_f64().is_some_and(|v| v > 0.0), "{r}");
    // The fan-out's part (published -> client) of each sampled trade is within its whole
    // latency (submit -> client), so its largest is too.
    let fanout: Vec<f64> = r["fanout_ms"]
        .as_array()
        .expect("fanout_ms")
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect();
    assert_eq!(fanout.len(), 3, "{r}");
    assert!(fanout[1] > 0.0, "{r}");
    let max = r["latency_ms_max"].as_f64().expect("max");
    assert!(fanout[2] <= max, "{r}");
}

/// `--json --runs N` prints one document: every run's report and their spread.
#[test]
fn the_ws_bench_prints_its_runs_and_their_spread_as_one_document() {
    let doc = bench(&[
        "ws",
        "--subscribers",
        "5",
        "--latency-clients",
        "2",
        "--trades-per-sec",
        "100",
        "--seconds",
        "1",
        "--runs",
        "2",
    ]);
    let runs = doc["runs"].as_array().expect("the runs' reports");
    assert_eq!(runs.len(), 2, "{doc}");
    let mut p99 = Vec::new();
    for r in runs {
        assert!(r["trades"].as_u64().is_some_and(|t| t >= 50), "{r}");
        p99.push(r["latency_ms_p99"].as_f64().expect("p99"));
    }
    p99.sort_by(f64::total_cmp);
    let spread = &doc["spread"];
    assert_eq!(spread["runs"], 2, "{spread}");
    assert!(
        spread["fanout_ms_p99"]["max"]
            .as_f64()
            .is_some_and(|v| v > 0.0),
        "{spread}"
    );
    assert_eq!(
        spread["latency_ms_p99"]["min"].as_f64(),
        Some(p99[0]),
        "{spread}"
    );
    assert_eq!(
        spread["latency_ms_p99"]["max"].as_f64(),
        Some(p99[1]),
        "{spread}"
    );
}
