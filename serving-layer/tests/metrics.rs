//! The serving layer's own metrics through the real Prometheus exporter: requests in flight go
//! back down when a client leaves mid-request, refusals at `serve.max_concurrency` are counted,
//! and durations are histograms. The recorder is process-wide: one test here.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_serving::{Backends, Server};
use braid_shared::Config;
use tokio_util::sync::CancellationToken;

/// One request on its own connection; the whole answer once the server closes it.
fn request(addr: SocketAddr, text: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(text.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The value of the sample `name` (with its labels, as the exposition writes them).
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn scrape(addr: SocketAddr) -> String {
    request(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_refusals_and_latency_histograms_are_exported() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[storage]\ndir = {:?}\n[serve]\nlisten = \"127.0.0.1:0\"\nrequest_timeout = \"5s\"\nmax_concurrency = 2\n\
         [[source]]\nname = \"payments\"\ntopic = \"payments\"\nevent_time = \"ts\"\n\
         [[view]]\nname = \"spend\"\nsource = \"payments\"\ngroup_by = [\"card\"]\ngranularity = \"1m\"\n[view.metrics]\ntx = \"count\"\n",
        dir.path().to_str().unwrap(),
    );
    let config = Arc::new(Config::from_toml(&text).unwrap());
    let backends = Backends {
        metrics: braid_serving::install_metrics(),
        ..Backends::default()
    };
    let cancel = CancellationToken::new();
    let storage = braid_store::open(&config.storage).unwrap();
    let listener = braid_serving::bind(config.serve.listen).await.unwrap();
    let server = Server::start(config, storage, backends, listener, cancel.clone())
        .await
        .unwrap();
    let addr = server.addr();
    tokio::task::spawn_blocking(move || {
        let idle = scrape(addr);
        assert!(idle.starts_with("HTTP/1.1 200"), "{idle}");
        // The scrape itself is the one request in flight; nothing refused yet.
        assert_eq!(sample(&idle, "braid_serve_requests_in_flight"), Some(1.0));
        assert_eq!(
            sample(&idle, "braid_serve_concurrency_refused_total"),
            Some(0.0)
        );

        // A request whose body never comes holds a slot; with the scrape, both are in flight.
        let mut holder = TcpStream::connect(addr).unwrap();
        holder
            .write_all(b"POST /v1/batch/runs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let held = scrape(addr);
            if sample(&held, "braid_serve_requests_in_flight") == Some(2.0) {
                break;
            }
            assert!(Instant::now() < deadline, "{held}");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Two held: a third is refused at once, and counted.
        let mut second = TcpStream::connect(addr).unwrap();
        second
            .write_all(b"POST /v1/batch/runs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let refused = request(
            addr,
            "GET /v1/views HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        // Both clients leave mid-request: their requests no longer count as in flight.
        drop(holder);
        drop(second);
        // (A scrape that comes before the server has noticed is refused too: counted here.)
        let mut refusals = 1.0;
        let deadline = Instant::now() + Duration::from_secs(5);
        let after = loop {
            let after = scrape(addr);
            if after.starts_with("HTTP/1.1 503") {
                refusals += 1.0;
            }
            if sample(&after, "braid_serve_requests_in_flight") == Some(1.0) {
                break after;
            }
            assert!(Instant::now() < deadline, "{after}");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            sample(&after, "braid_serve_concurrency_refused_total"),
            Some(refusals)
        );
        // Durations are histograms with buckets, which Prometheus can aggregate.
        assert!(
            after.contains(
                "braid_serve_request_duration_seconds_bucket{route=\"/metrics\",le=\"0.001\"}"
            ),
            "{after}"
        );
        assert!(!after.contains("quantile=\""), "{after}");
    })
    .await
    .unwrap();
    cancel.cancel();
    server.join().await.unwrap();
}
