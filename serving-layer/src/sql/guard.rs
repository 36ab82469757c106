//! What a query may be: exactly one SELECT, reading only Braid's tables (and its own common
//! table expressions) and a few pure generators. Decided on DuckDB's own parse tree
//! (`json_serialize_sql`), never by matching text.

use std::collections::BTreeSet;

use serde_json::Value as Json;

/// Table functions a query may call: pure generators that read nothing.
const ALLOWED_TABLE_FUNCTIONS: [&str; 3] = ["range", "generate_series", "unnest"];

/// Scalar functions a query may not call: they reveal the process or its settings.
const REFUSED_FUNCTIONS: [&str; 4] = ["getenv", "current_setting", "read_text", "read_blob"];

/// Why a statement is refused (400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// The tables a query reads, by name (lower case), once it is accepted.
pub fn check(serialized: &str, known: &BTreeSet<String>) -> Result<BTreeSet<String>, Refused> {
    let tree: Json = serde_json::from_str(serialized)
        .map_err(|e| Refused(format!("the statement cannot be analysed: {e}")))?;
    if tree["error"].as_bool() == Some(true) {
        let message = tree["error_message"].as_str().unwrap_or("unknown error");
        return Err(Refused(match tree["error_type"].as_str() {
            Some("not implemented") if message.contains("Only SELECT") => {
                "only a read-only query (SELECT, WITH ... SELECT, VALUES) is accepted; writes, COPY, ATTACH, INSTALL, LOAD, SET, PRAGMA and other statements are refused".to_owned()
            }
            _ => format!("the statement does not parse: {message}"),
        }));
    }
    let statements = tree["statements"].as_array().map_or(0, Vec::len);
    if statements != 1 {
        return Err(Refused(format!(
            "exactly one statement is accepted; this text holds {statements}"
        )));
    }
    let mut walk = Walk::default();
    walk.visit(&tree["statements"][0]);
    if let Some(function) = walk
        .table_functions
        .iter()
        .find(|f| !ALLOWED_TABLE_FUNCTIONS.contains(&f.as_str()))
    {
        return Err(Refused(format!(
            "table function {function:?} is refused: queries read Braid's tables only (table functions allowed: {})",
            ALLOWED_TABLE_FUNCTIONS.join(", ")
        )));
    }
    if let Some(function) = walk
        .functions
        .iter()
        .find(|f| REFUSED_FUNCTIONS.contains(&f.as_str()))
    {
        return Err(Refused(format!("function {function:?} is refused")));
    }
    let mut read = BTreeSet::new();
    for table in &walk.tables {
        if walk.ctes.contains(table) {
            continue;
        }
        if !known.contains(table) {
            let listed: Vec<&str> = known.iter().map(String::as_str).collect();
            return Err(Refused(format!(
                "no table {:?}; the tables are: {}",
                braid_shared::text::abbreviate(table),
                listed.join(", ")
            )));
        }
        read.insert(table.clone());
    }
    Ok(read)
}

/// Everything a parse tree names.
#[derive(Default)]
struct Walk {
    tables: BTreeSet<String>,
    ctes: BTreeSet<String>,
    table_functions: BTreeSet<String>,
    functions: BTreeSet<String>,
}

impl Walk {
    fn visit(&mut self, node: &Json) {
        match node {
            Json::Object(map) => {
                match map.get("type").and_then(Json::as_str) {
                    Some("BASE_TABLE") => {
                        let name = |key: &str| map.get(key).and_then(Json::as_str).unwrap_or("");
                        let qualified = [name("catalog_name"), name("schema_name")]
                            .iter()
                            .any(|part| !part.is_empty());
                        let table = name("table_name").to_lowercase();
                        // A qualified name never names one of Braid's tables.
                        self.tables.insert(if qualified {
                            format!("{}.{table}", name("schema_name"))
                        } else {
                            table
                        });
                    }
                    Some("TABLE_FUNCTION") => {
                        if let Some(name) = map
                            .get("function")
                            .and_then(|f| f.get("function_name"))
                            .and_then(Json::as_str)
                        {
                            self.table_functions.insert(name.to_lowercase());
                        }
                    }
                    Some("FUNCTION") => {
                        if let Some(name) = map.get("function_name").and_then(Json::as_str) {
                            self.functions.insert(name.to_lowercase());
                        }
                    }
                    _ => {}
                }
                if let Some(ctes) = map
                    .get("cte_map")
                    .and_then(|c| c.get("map"))
                    .and_then(Json::as_array)
                {
                    for cte in ctes {
                        if let Some(name) = cte.get("key").and_then(Json::as_str) {
                            self.ctes.insert(name.to_lowercase());
                        }
                    }
                }
                for value in map.values() {
                    self.visit(value);
                }
            }
            Json::Array(items) => items.iter().for_each(|item| self.visit(item)),
            _ => {}
        }
    }
}
