//! What the operator meets at start-up and in `/metrics`: one server per data dir, settings
//! that either create every market or none, errors naming what to fix, and a metrics text a
//! Prometheus parser reads family by family.

use bourse_tests::*;

/// Every family's samples follow its own `# HELP` and `# TYPE` lines, never another
/// family's: `bourse_ring_occupancy` and `bourse_ring_capacity` were interleaved, so a parser
/// (Python's `prometheus_client`) read a typed family with no samples and then one untyped
/// family per line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_families_are_contiguous_and_described() {
    let s = TestServer::start().await;
    let a = s.register("alice").await;
    let admin = s.admin_token().await;
    s.fund(&admin, &a, "SEK", "1000").await;
    s.limit(&a, "BTC_SEK", "buy", "0.001", "1000", "m1").await;
    let (st, text) = s.get_text("/metrics").await;
    assert_eq!(st, StatusCode::OK);
    let mut helped = std::collections::HashSet::new();
    let mut typed: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            assert!(
                !typed.iter().any(|(n, _)| n == name),
                "{name} typed twice:\n{text}"
            );
            assert!(helped.contains(name), "{name} has no HELP:\n{text}");
            typed.push((name.to_string(), kind.to_string()));
        } else if !line.is_empty() {
            let sample = line.split(['{', ' ']).next().unwrap();
            let (family, kind) = typed.last().expect("a sample before any TYPE");
            let ok = sample == family
                || (kind == "histogram"
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|sfx| sample.strip_suffix(sfx) == Some(family)));
            assert!(ok, "{sample} among the samples of {family}:\n{text}");
        }
    }
    for name in ["bourse_ring_occupancy", "bourse_ring_capacity"] {
        assert!(typed.iter().any(|(n, _)| n == name), "{name}:\n{text}");
    }
    s.stop().await;
}
