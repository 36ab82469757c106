//! A schema registry for tests, speaking the Confluent REST API that producers and Braid use
//! (over plain HTTP, or HTTPS with a self-signed certificate and basic auth):
//! `POST /subjects/{subject}/versions` (register), `POST /subjects/{subject}` (look up),
//! `GET /schemas/ids/{id}`, `GET /subjects/{subject}/versions/{version|latest}`. It keeps
//! what it is given, counts the lookups by id, and can be told to answer lookups with 503
//! (an outage as Braid sees it, while producers still register).

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value as Json, json};

#[derive(Default)]
struct Store {
    /// By id - 1: (schema, type, references).
    schemas: Vec<(String, String, Json)>,
    /// Subject -> schema ids, by version - 1.
    subjects: HashMap<String, Vec<u32>>,
}

struct Shared {
    store: Mutex<Store>,
    down: AtomicBool,
    lookups: AtomicUsize,
    /// The `Authorization` header every request must carry, if any.
    authorization: Option<String>,
}

/// A running registry; it stops with the test process.
pub struct TestRegistry {
    pub url: String,
    /// The same registry on a second address that [`TestRegistry::set_down`] leaves up: for
    /// a harness's own reader while the processes under test see an outage.
    pub steady_url: String,
    shared: Arc<Shared>,
}

impl TestRegistry {
    pub fn start() -> Self {
        Self::start_with(None, None)
    }

    /// A registry on `https://127.0.0.1:port` with a new self-signed certificate, answering only
    /// requests with basic auth of `user` and `password` (401 otherwise); and the certificate
    /// as PEM, for clients to trust.
    pub fn start_secure(user: &str, password: &str) -> (Self, String) {
        use base64::Engine as _;
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("a self-signed certificate");
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("a TLS server configuration");
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let registry = Self::start_with(Some(Arc::new(tls)), Some(format!("Basic {token}")));
        (registry, certified.cert.pem())
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>, authorization: Option<String>) -> Self {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            down: AtomicBool::new(false),
            lookups: AtomicUsize::new(0),
            authorization,
        });
        let listen = |faulty: bool| {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test registry");
            let scheme = if tls.is_some() { "https" } else { "http" };
            let url = format!("{scheme}://{}", listener.local_addr().unwrap());
            let serving = Arc::clone(&shared);
            let tls = tls.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let shared = Arc::clone(&serving);
                    let tls = tls.clone();
                    std::thread::spawn(move || match tls {
                        None => serve(stream, &shared, faulty),
                        Some(tls) => {
                            if let Ok(connection) = rustls::ServerConnection::new(tls) {
                                serve(
                                    rustls::StreamOwned::new(connection, stream),
                                    &shared,
                                    faulty,
                                );
                            }
                        }
                    });
                }
            });
            url
        };
        let url = listen(true);
        let steady_url = listen(false);
        Self {
            url,
            steady_url,
            shared,
        }
    }

    /// While down, `GET /schemas/ids/{id}` on [`TestRegistry::url`] answers 503; registering
    /// still works.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// `GET /schemas/ids/{id}` requests answered so far.
    pub fn lookups(&self) -> usize {
        self.shared.lookups.load(Ordering::SeqCst)
    }

    /// Registers a schema under `subject` as a producer would; its id.
    pub fn register(&self, subject: &str, schema: &str, schema_type: &str) -> u32 {
        register(
            &self.shared,
            subject,
            &json!({"schema": schema, "schemaType": schema_type}),
        )
    }
}

fn register(shared: &Shared, subject: &str, body: &Json) -> u32 {
    let schema = body["schema"].as_str().unwrap_or_default().to_owned();
    let kind = body["schemaType"].as_str().unwrap_or("AVRO").to_owned();
    let references = body.get("references").cloned().unwrap_or(json!([]));
    let mut store = shared.store.lock().unwrap();
    let existing = store
        .schemas
        .iter()
        .position(|(s, k, r)| *s == schema && *k == kind && *r == references);
    let id = match existing {
        Some(at) => at as u32 + 1,
        None => {
            store.schemas.push((schema, kind, references));
            store.schemas.len() as u32
        }
    };
    let versions = store.subjects.entry(subject.to_owned()).or_default();
    if !versions.contains(&id) {
        versions.push(id);
    }
    id
}

fn document(store: &Store, id: u32) -> Option<Json> {
    let (schema, kind, references) = store.schemas.get(id.checked_sub(1)? as usize)?;
    let mut doc = json!({"schema": schema, "references": references});
    if kind != "AVRO" {
        doc["schemaType"] = json!(kind);
    }
    Some(doc)
}

fn decode_segment(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Answers one request: status and JSON body.
fn answer(shared: &Shared, faulty: bool, method: &str, target: &str, body: &[u8]) -> (u16, Json) {
    let path = target.split('?').next().unwrap_or_default();
    let parts: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(decode_segment)
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let not_found = |what: &str| (404, json!({"error_code": 40403, "message": what}));
    let body: Json = serde_json::from_slice(body).unwrap_or(Json::Null);
    match (method, parts.as_slice()) {
        ("GET", ["schemas", "ids", id]) => {
            if !faulty {
                let store = shared.store.lock().unwrap();
                return match id.parse().ok().and_then(|id| document(&store, id)) {
                    Some(doc) => (200, doc),
                    None => not_found("Schema not found"),
                };
            }
            shared.lookups.fetch_add(1, Ordering::SeqCst);
            if shared.down.load(Ordering::SeqCst) {
                return (503, json!({"error_code": 50003, "message": "unavailable"}));
            }
            let store = shared.store.lock().unwrap();
            match id.parse().ok().and_then(|id| document(&store, id)) {
                Some(doc) => (200, doc),
                None => not_found("Schema not found"),
            }
        }
        ("POST", ["subjects", subject, "versions"]) => {
            let id = register(shared, subject, &body);
            let store = shared.store.lock().unwrap();
            let version = store.subjects[*subject]
                .iter()
                .position(|v| *v == id)
                .unwrap()
                + 1;
            (
                200,
                json!({"id": id, "subject": subject, "version": version}),
            )
        }
        ("POST", ["subjects", subject]) | ("GET", ["subjects", subject, "versions", _]) => {
            let store = shared.store.lock().unwrap();
            let Some(versions) = store.subjects.get(*subject) else {
                return not_found("Subject not found");
            };
            let found = match parts.get(3) {
                Some(&"latest") => versions.last().map(|id| (versions.len(), *id)),
                Some(v) => v
                    .parse::<usize>()
                    .ok()
                    .and_then(|v| Some((v, *versions.get(v.checked_sub(1)?)?))),
                None => versions.iter().enumerate().find_map(|(i, id)| {
                    let (schema, _, _) = &store.schemas[*id as usize - 1];
                    (Some(schema.as_str()) == body["schema"].as_str()).then_some((i + 1, *id))
                }),
            };
            let Some((version, id)) = found else {
                return not_found("Version not found");
            };
            let mut doc = document(&store, id).unwrap_or(Json::Null);
            doc["id"] = json!(id);
            doc["version"] = json!(version);
            doc["subject"] = json!(subject);
            (200, doc)
        }
        _ => not_found("no such endpoint"),
    }
}

/// Serves one connection's requests (HTTP/1.1, kept alive) until the client closes it.
fn serve(stream: impl Read + Write, shared: &Shared, faulty: bool) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut words = line.split_whitespace();
        let (Some(method), Some(target)) = (words.next(), words.next()) else {
            return;
        };
        let (method, target) = (method.to_owned(), target.to_owned());
        let mut length = 0usize;
        let mut close = false;
        let mut authorization = None;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.parse().unwrap_or(0),
                    "connection" => close = value.eq_ignore_ascii_case("close"),
                    "authorization" => authorization = Some(value.to_owned()),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (status, json) = match &shared.authorization {
            Some(wanted) if authorization.as_ref() != Some(wanted) => {
                (401, json!({"error_code": 40101, "message": "Unauthorized"}))
            }
            _ => answer(shared, faulty, &method, &target, &body),
        };
        let text = json.to_string();
        let reason = match status {
            200 => "OK",
            401 => "Unauthorized",
            404 => "Not Found",
            _ => "Service Unavailable",
        };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        let writer = reader.get_mut();
        if writer.write_all(response.as_bytes()).is_err() || writer.flush().is_err() || close {
            return;
        }
    }
}
