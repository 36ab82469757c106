//! The dashboard page in a real browser: headless Chromium (Debian's) driven over the DevTools
//! protocol loads the page from a running `braid dev` fed with known events, and the test
//! checks what a person would see: the chart drew its points, the table holds the API's own
//! values and sorts, an event value carrying markup shows as text, and a screenshot is taken.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::dev::Dev;
use crate::common::get;
use crate::common::tools::system;
use base64::Engine as _;
use braid_testkit::{Produced, produce, producer, wait_for};
use serde_json::{Value as Json, json};
use tungstenite::stream::MaybeTlsStream;

/// Headless Chromium with the DevTools protocol on a port it picks.
struct Browser {
    child: Child,
    port: u16,
}

impl Browser {
    fn start(profile: &Path) -> Self {
        let child = Command::new(system("chromium"))
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1400,1800",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Chromium writes the port it listens on into the profile.
        let file = profile.join("DevToolsActivePort");
        let mut port = 0;
        wait_for("Chromium's DevTools port", Duration::from_secs(30), || {
            port = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.parse().ok()))
                .unwrap_or(0);
            port != 0
        });
        Self { child, port }
    }

    /// The page target Chromium opened, over its WebSocket.
    fn page(&self) -> Page {
        let (_, targets) = get(&format!("http://127.0.0.1:{}/json/list", self.port));
        let url = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_owned();
        let (socket, _) = tungstenite::connect(url).unwrap();
        Page { socket, next: 0 }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Page {
    socket: tungstenite::WebSocket<MaybeTlsStream<TcpStream>>,
    next: u64,
}

impl Page {
    /// One DevTools command; its result (events in between are skipped).
    fn call(&mut self, method: &str, params: Json) -> Json {
        self.next += 1;
        let id = self.next;
        let message = json!({"id": id, "method": method, "params": params});
        self.socket
            .send(tungstenite::Message::text(message.to_string()))
            .unwrap();
        loop {
            let reply = self.socket.read().unwrap();
            let Ok(text) = reply.to_text() else { continue };
            let reply: Json = serde_json::from_str(text).unwrap();
            if reply["id"] == id {
                assert!(reply["error"].is_null(), "{method}: {}", reply["error"]);
                return reply["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page; its value (promises awaited).
    fn eval(&mut self, expression: &str) -> Json {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }
}

const SCRIPT_CARD: &str = "<script>window.__pwned=1</script>";
const IMG_CARD: &str = "<img src=x onerror=\"window.__pwned=2\">";

/// Known payments over the last ten minutes, as ten (card, minute) cells of `card_spend`: two
/// cards whose ids carry markup, one calm card paying twice a minute.
fn payments() -> Vec<Produced> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut cells: Vec<(&str, i64, usize)> = vec![(SCRIPT_CARD, 1, 30), (IMG_CARD, 2, 25)];
    cells.extend((3..=10).map(|minute| ("card-1", minute, 2)));
    let mut messages = Vec::new();
    for (card, minute, count) in cells {
        let ts = chrono::DateTime::from_timestamp_millis(now - minute * 60_000 - 1_000)
            .unwrap()
            .to_rfc3339();
        for i in 0..count {
            let n = messages.len();
            let country = ["US", "DE", "BR"][i % 3];
            let event = json!({
                "tx_id": format!("t{n}"),
                "card_id": card,
                "merchant_id": format!("m{}", i % 4),
                "country": country,
                "amount": 10.25 + (n * 7 % 13) as f64,
                "ts": ts,
            });
            messages.push(Produced {
                partition: (n % 3) as i32,
                payload: event.to_string().into_bytes(),
            });
        }
    }
    messages
}

/// The rows of a view's table on the page: column -> the cell's raw value.
const TABLE_ROWS: &str = r##"(view) => {
  const card = document.getElementById("view-" + view);
  if (!card) return [];
  const columns = [...card.querySelectorAll("[data-role=table] th")].map(th => th.dataset.column);
  return [...card.querySelectorAll("[data-role=table] tbody tr")].map(tr =>
    Object.fromEntries([...tr.children].map((td, i) => [columns[i], td.dataset.value])));
}"##;

/// How many pixels of the view's chart canvas have the series colour.
const CHART_PIXELS: &str = r##"(view) => {
  const canvas = document.querySelector("#view-" + view + " [data-role=chart] canvas");
  if (!canvas || canvas.width === 0) return 0;
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (Math.abs(data[i] - 37) < 40 && Math.abs(data[i + 1] - 99) < 40 && Math.abs(data[i + 2] - 235) < 40 && data[i + 3] > 200) n++;
  }
  return n;
}"##;

/// A value of the API as the page keeps it in `data-value`.
fn same_value(api: &Json, page: &Json) -> bool {
    let page = page.as_str().unwrap_or("");
    match api {
        Json::Null => page.is_empty(),
        Json::Number(n) => page.parse::<f64>().ok() == n.as_f64(),
        Json::String(s) => page == s,
        other => serde_json::to_string(other).is_ok_and(|text| text == page),
    }
}

#[test]
fn dashboard_shows_the_apis_numbers_as_a_chart_and_a_sortable_table_with_markup_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::example(dir.path(), 0, &[("BRAID__BATCH__INTERVAL", "off")]);
    let messages = payments();
    produce(&producer(&dev.broker), "payments", &messages);
    let base = dev.base().to_owned();
    let totals = format!("{base}/v1/views/card_spend?from=now-1h&to=now&group_by=&step=60s");
    wait_for(
        "every event in the merged answer",
        Duration::from_secs(60),
        || {
            let (_, answer) = get(&totals);
            let rows = answer["rows"].as_array().cloned().unwrap_or_default();
            rows.iter().filter_map(|r| r["tx"].as_u64()).sum::<u64>() == messages.len() as u64
        },
    );

    let browser = Browser::start(&dir.path().join("chromium"));
    let mut page = browser.page();
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1400, "height": 1800, "deviceScaleFactor": 1, "mobile": false}),
    );
    page.call("Page.navigate", json!({"url": dev.url}));

    // The chart of card_spend drew its per-bucket points; the table holds rows.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (points, pixels, rows) = loop {
        let points = page.eval(
            "Number(document.querySelector('#view-card_spend [data-role=chart]')?.dataset.points || 0)",
        );
        let pixels = page.eval(&format!("({CHART_PIXELS})('card_spend')"));
        let rows = page.eval(&format!("({TABLE_ROWS})('card_spend')"));
        let ready = points.as_u64().unwrap_or(0) > 0
            && pixels.as_u64().unwrap_or(0) > 0
            && rows.as_array().is_some_and(|r| !r.is_empty());
        if ready || Instant::now() > deadline {
            break (points, pixels, rows);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // One point per minute bucket that has events: ten of them.
    let buckets = get(&totals).1["rows"].as_array().unwrap().len() as u64;
    assert_eq!(buckets, 10);
    assert_eq!(points.as_u64(), Some(buckets), "points drawn");
    assert!(
        pixels.as_u64().unwrap() > 200,
        "{pixels} pixels of the series colour"
    );

    // The table's values are the API's answer to the same query (each card over the range),
    // value for value; all three cards, so ties in the order cannot change which are shown.
    let (_, answer) = get(&format!(
        "{base}/v1/views/card_spend?from=now-1h&to=now&order_by=tx&limit=10"
    ));
    let expected = answer["rows"].as_array().unwrap();
    assert_eq!(answer["total_rows"], 3);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), expected.len());
    let by_card: BTreeMap<&str, &Json> = rows
        .iter()
        .map(|r| (r["card_id"].as_str().unwrap(), r))
        .collect();
    for row in expected {
        let shown = by_card
            .get(row["card_id"].as_str().unwrap())
            .unwrap_or_else(|| panic!("{row} is not on the page: {rows:?}"));
        // `bucket` is the range's start, which moves with `now`: the page does not show it.
        assert!(shown.get("bucket").is_none());
        for (column, value) in row.as_object().unwrap() {
            if column == "bucket" {
                continue;
            }
            assert!(
                same_value(value, &shown[column]),
                "{column}: API {value}, page {}",
                shown[column]
            );
        }
    }

    // Clicking a column sorts by it, descending first, then ascending.
    for descending in [true, false] {
        page.eval("document.querySelector('#view-card_spend th[data-column=amount]').click()");
        let state = if descending {
            "descending"
        } else {
            "ascending"
        };
        assert_eq!(
            page.eval("document.querySelector('#view-card_spend th[data-column=amount]').getAttribute('aria-sort')"),
            state
        );
        let amounts: Vec<f64> = page
            .eval(&format!("({TABLE_ROWS})('card_spend')"))
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["amount"].as_str().unwrap().parse().unwrap())
            .collect();
        let mut sorted = amounts.clone();
        sorted.sort_by(f64::total_cmp);
        if descending {
            sorted.reverse();
        }
        assert_eq!(amounts, sorted, "descending: {descending}");
    }

    // Each row's trace links show its newest cell's lineage and its raw events, fetched by the
    // page itself (markup in a card id included).
    let cards = page.eval(
        "[...document.querySelectorAll('#view-card_spend a[data-trace=lineage]')].map(a => JSON.parse(a.dataset.key).card_id)",
    );
    let cards = cards.as_array().unwrap().clone();
    assert_eq!(cards.len(), 3, "{cards:?}");
    for (i, card) in cards.iter().enumerate() {
        for kind in ["lineage", "events"] {
            page.eval(
                "document.querySelector('#view-card_spend [data-role=trace]').textContent = ''",
            );
            page.eval(&format!(
                "document.querySelectorAll('#view-card_spend a[data-trace={kind}]')[{i}].click()"
            ));
            let deadline = Instant::now() + Duration::from_secs(20);
            let shown = loop {
                let text = page.eval(
                    "document.querySelector('#view-card_spend [data-role=trace]').textContent",
                );
                let text = text.as_str().unwrap_or_default().to_owned();
                if text.starts_with("GET ") || Instant::now() > deadline {
                    break text;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            let (request, body) = shown
                .split_once('\n')
                .unwrap_or_else(|| panic!("{kind}: {shown}"));
            assert!(
                request.starts_with(&format!("GET /v1/{kind}/")),
                "{request}"
            );
            let answer: Json = serde_json::from_str(body).unwrap();
            if kind == "lineage" {
                assert_eq!(answer["key"]["card_id"], *card, "{answer}");
                assert!(answer["value"]["tx"].as_u64().unwrap() >= 1, "{answer}");
                // The page's lineage is the API's for the same cell.
                let (_, direct) = get(&format!("{base}{}", &request[4..]));
                assert_eq!(direct["value"], answer["value"]);
            } else {
                let events = answer["events"].as_array().unwrap();
                assert!(!events.is_empty(), "{answer}");
                assert!(
                    events.iter().all(|e| e["event"]["card_id"] == *card),
                    "{answer}"
                );
            }
        }
    }

    // Markup in an event value is shown as text: no script ran, no element was made.
    let markup = page.eval(&format!(
        "(() => {{ const cells = [...document.querySelectorAll('#view-card_spend td')]; return {{
            pwned: typeof window.__pwned,
            images: document.images.length,
            script: cells.filter(td => td.dataset.value === {SCRIPT_CARD:?}).map(td => td.textContent),
            img: cells.filter(td => td.dataset.value === {IMG_CARD:?}).map(td => td.textContent),
        }} }})()"
    ));
    assert_eq!(markup["pwned"], "undefined", "{markup}");
    assert_eq!(markup["images"], 0, "{markup}");
    let script = markup["script"].as_array().unwrap();
    let img = markup["img"].as_array().unwrap();
    assert!(!script.is_empty() && !img.is_empty(), "{markup}");
    assert!(script.iter().all(|t| t == SCRIPT_CARD), "{markup}");
    assert!(img.iter().all(|t| t == IMG_CARD), "{markup}");

    // Freshness and provenance are shown.
    let fresh = page.eval("document.getElementById('freshness').textContent");
    assert!(fresh.as_str().unwrap().contains("speed lag"), "{fresh}");
    let provenance =
        page.eval("document.querySelector('#view-card_spend [data-role=provenance]').textContent");
    assert!(
        provenance
            .as_str()
            .unwrap()
            .contains("exact to offsets payments/0@"),
        "{provenance}"
    );

    let shot = page.call(
        "Page.captureScreenshot",
        json!({"format": "png", "captureBeyondViewport": true}),
    );
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    std::fs::write(dir.path().join("dashboard.png"), &png).unwrap();
    if let Some(copy) = std::env::var_os("BRAID_SCREENSHOT") {
        std::fs::write(copy, &png).unwrap();
    }
    drop(page);
    drop(browser);
    dev.stop();
}
