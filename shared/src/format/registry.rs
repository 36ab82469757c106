//! A Confluent-compatible schema registry client: a schema is fetched by id
//! (`GET /schemas/ids/{id}`) the first time a message names it, parsed once, and kept for the
//! life of the process (an id's schema never changes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::avro::AvroSchema;
use super::proto::ProtoSchema;

/// How long one registry request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest schema document read from a registry.
const MAX_SCHEMA_BYTES: u64 = 4 * 1024 * 1024;

/// What a registry holds for a schema id.
#[derive(Clone)]
pub enum Known {
    Avro(Arc<AvroSchema>),
    Protobuf(Arc<ProtoSchema>),
    /// The registry has no such id (404), or its schema cannot be read: messages naming it are
    /// rejected with this reason.
    Missing(String),
}

/// Why a schema could not be looked up now: the registry is unreachable or failing. Never a
/// reason to reject a message; the layers wait and ask again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schema registry {url} is unavailable: {why}")]
pub struct Unavailable {
    pub url: String,
    pub why: String,
}

/// Settings of a registry connection, from `[schema_registry]`.
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    pub url: String,
    /// `user:password` for basic auth.
    pub basic_auth: Option<(String, String)>,
    /// PEM certificates trusted for `https` (the public roots otherwise).
    pub ca_pem: Option<Vec<u8>>,
}

/// A registry and the schemas read from it.
pub struct Registry {
    url: String,
    agent: ureq::Agent,
    authorization: Option<String>,
    /// Read for every message of a registry source, by both layers' threads: read-locked.
    schemas: RwLock<HashMap<u32, Known>>,
    /// Held while fetching: threads missing the same schema at once fetch it once.
    fetching: Mutex<()>,
    /// Why the last lookup failed, until one succeeds.
    down: Mutex<Option<String>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("url", &self.url).finish()
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaDocument {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

/// Another subject's schema that a schema imports, by the name it imports it as.
#[derive(serde::Deserialize)]
struct Reference {
    name: String,
    subject: String,
    version: i64,
}

impl Registry {
    /// A client of the registry at `settings.url`; nothing is fetched yet.
    pub fn new(settings: &RegistrySettings) -> Result<Self, String> {
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .http_status_as_error(false);
        if let Some(pem) = &settings.ca_pem {
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(pem) {
                match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert.to_owned()),
                    Ok(_) => {}
                    Err(e) => return Err(format!("not a PEM certificate file: {e}")),
                }
            }
            if certs.is_empty() {
                return Err("holds no PEM certificate".to_owned());
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        let authorization = settings.basic_auth.as_ref().map(|(user, password)| {
            use base64::Engine as _;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {token}")
        });
        Ok(Self {
            url: settings.url.trim_end_matches('/').to_owned(),
            agent: ureq::Agent::new_with_config(config.build()),
            authorization,
            schemas: RwLock::new(HashMap::new()),
            fetching: Mutex::new(()),
            down: Mutex::new(None),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Why the registry could not be read at the last attempt, while it cannot.
    pub fn down(&self) -> Option<String> {
        self.down.lock().ok().and_then(|down| down.clone())
    }

    /// The schema with id `id`: from the cache, or fetched (blocking, at most a few seconds).
    pub fn schema(&self, id: u32) -> Result<Known, Unavailable> {
        let cached = || self.schemas.read().ok().and_then(|s| s.get(&id).cloned());
        if let Some(known) = cached() {
            return Ok(known);
        }
        let _fetching = self.fetching.lock();
        if let Some(known) = cached() {
            return Ok(known);
        }
        let fetched = self.fetch(id);
        if let Ok(mut down) = self.down.lock() {
            *down = fetched.as_ref().err().map(|e| e.why.clone());
        }
        let known = fetched?;
        if let Ok(mut schemas) = self.schemas.write() {
            schemas.entry(id).or_insert_with(|| known.clone());
        }
        Ok(known)
    }

    /// Registers `schema` (of `schema_type`: `AVRO` or `PROTOBUF`) under `subject`, as a
    /// producer does before it writes; its id.
    pub fn register(&self, subject: &str, schema_type: &str, schema: &str) -> Result<u32, String> {
        let path = format!("/subjects/{}/versions", encode_segment(subject));
        let mut request = self
            .agent
            .post(format!("{}{path}", self.url))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json");
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let body = serde_json::json!({"schema": schema, "schemaType": schema_type});
        let mut response = request
            .send(body.to_string())
            .map_err(|e| format!("registering a schema at {}: {e}", self.url))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_SCHEMA_BYTES)
            .read_to_string()
            .unwrap_or_default();
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        match (status, answer["id"].as_u64()) {
            (200, Some(id)) => {
                u32::try_from(id).map_err(|_| format!("schema id {id} is out of range"))
            }
            _ => Err(format!(
                "registering a schema under {subject:?} at {}: answered {status} {}",
                self.url,
                crate::event::quote(&text)
            )),
        }
    }

    /// The sources of the files a Protobuf schema imports from other subjects (the
    /// well-known types come with the compiler).
    fn imports(&self, references: &[Reference]) -> Result<Vec<(String, String)>, Unavailable> {
        let mut files = Vec::new();
        for reference in references {
            if reference.name.starts_with("google/protobuf/") {
                continue;
            }
            let path = format!(
                "/subjects/{}/versions/{}",
                encode_segment(&reference.subject),
                reference.version
            );
            let (status, body) = self.get(&path)?;
            if status != 200 {
                return Err(Unavailable {
                    url: self.url.clone(),
                    why: format!("GET {path} answered {status}"),
                });
            }
            let document: SchemaDocument =
                serde_json::from_str(&body).map_err(|e| Unavailable {
                    url: self.url.clone(),
                    why: format!("GET {path} answered no schema document ({e})"),
                })?;
            files.push((reference.name.clone(), document.schema));
        }
        Ok(files)
    }

    /// A GET of `path`: its status and body.
    fn get(&self, path: &str) -> Result<(u16, String), Unavailable> {
        let unavailable = |why: String| Unavailable {
            url: self.url.clone(),
            why,
        };
        let mut request = self
            .agent
            .get(format!("{}{path}", self.url))
            .header("Accept", "application/vnd.schemaregistry.v1+json");
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let mut response = request.call().map_err(|e| unavailable(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_SCHEMA_BYTES)
            .read_to_string()
            .map_err(|e| unavailable(format!("reading GET {path}: {e}")))?;
        Ok((status, body))
    }

    fn fetch(&self, id: u32) -> Result<Known, Unavailable> {
        let unavailable = |why: String| Unavailable {
            url: self.url.clone(),
            why,
        };
        let (status, body) = self.get(&format!("/schemas/ids/{id}"))?;
        match status {
            200 => {}
            404 => {
                return Ok(Known::Missing(format!(
                    "the registry has no schema with id {id}"
                )));
            }
            // Credentials refused, or any other answer: the registry (or its configuration)
            // must be fixed; the messages are not at fault.
            _ => {
                return Err(unavailable(format!(
                    "GET /schemas/ids/{id} answered {status}"
                )));
            }
        }
        let document: SchemaDocument = match serde_json::from_str(&body) {
            Ok(document) => document,
            Err(e) => {
                return Err(unavailable(format!(
                    "GET /schemas/ids/{id} answered no schema document ({e})"
                )));
            }
        };
        let kind = document.schema_type.as_deref().unwrap_or("AVRO");
        Ok(match kind {
            "AVRO" if !document.references.is_empty() => Known::Missing(format!(
                "Avro schema {id} references other subjects, which Braid does not read"
            )),
            "AVRO" => match AvroSchema::parse(&document.schema) {
                Ok(schema) => Known::Avro(Arc::new(schema)),
                Err(e) => Known::Missing(format!("schema {id} is not a readable Avro schema: {e}")),
            },
            "PROTOBUF" => match ProtoSchema::parse_with(
                &format!("schema-{id}.proto"),
                &document.schema,
                self.imports(&document.references)?,
            ) {
                Ok(schema) => Known::Protobuf(Arc::new(schema)),
                Err(e) => Known::Missing(format!(
                    "schema {id} is not a readable Protobuf schema: {e}"
                )),
            },
            other => Known::Missing(format!(
                "schema {id} is of type {other}, which this source does not read"
            )),
        })
    }
}

/// A subject name as one URL path segment.
fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
