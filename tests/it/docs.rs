//! The documentation stays true to the tree: every relative link of README.md, ARCHITECTURE.md
//! and docs/ leads to a file (and a heading, when it names one), and every configuration key
//! the config loader (and so `braid check`) accepts is in docs/configuration.md. Each check is
//! also run on a planted mistake, so a check that finds nothing cannot pass for one that works.

use std::path::{Path, PathBuf};

/// The documents a reader follows links in.
fn documents() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("README.md"), PathBuf::from("ARCHITECTURE.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir("docs")
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The targets of `[text](target)` links in `markdown`, outside code blocks and spans.
fn links(markdown: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Code spans hold no links.
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, part)| part)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    found
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &str) -> Vec<String> {
    let mut fenced = false;
    markdown
        .lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
            }
            !fenced && line.starts_with('#')
        })
        .map(|line| anchor(line.trim_start_matches('#')))
        .collect()
}

/// Every relative link of `file` (read as `markdown`) that leads nowhere: a missing file, or a
/// heading its target does not have.
fn broken_links(file: &Path, markdown: &str) -> Vec<String> {
    let dir = file.parent().unwrap_or(Path::new(""));
    let mut broken = Vec::new();
    for link in links(markdown) {
        if link.contains("://") || link.starts_with("mailto:") {
            continue;
        }
        let (path, heading) = link.split_once('#').unwrap_or((&link, ""));
        let target = if path.is_empty() {
            file.to_owned()
        } else {
            dir.join(path)
        };
        if !target.exists() {
            broken.push(format!(
                "{}: {link} (no file {})",
                file.display(),
                target.display()
            ));
            continue;
        }
        let is_markdown = target.extension().is_some_and(|e| e == "md");
        if !heading.is_empty() && is_markdown {
            let text = std::fs::read_to_string(&target).unwrap();
            if !anchors(&text).iter().any(|a| a == heading) {
                broken.push(format!(
                    "{}: {link} (no heading #{heading})",
                    file.display()
                ));
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_of_the_docs_leads_somewhere() {
    let mut broken = Vec::new();
    for file in documents() {
        let text = std::fs::read_to_string(&file).unwrap();
        broken.extend(broken_links(&file, &text));
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    // A planted broken link and a planted missing heading are found.
    let planted = "See [the guide](docs/no-such-page.md) and [keys](docs/configuration.md#no-such-heading).\n\
                   `[not a link](nowhere.md)` in code is not one.";
    let found = broken_links(Path::new("README.md"), planted);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("no-such-page.md"), "{found:?}");
    assert!(
        found[1].contains("no heading #no-such-heading"),
        "{found:?}"
    );
}

/// Where the loader accepts keys: the TOML that opens the table, and the dotted prefix the
/// docs write its keys under.
const TABLES: &[(&str, &str)] = &[
    ("", ""),
    ("[kafka]", "kafka."),
    ("[storage]", "storage."),
    ("[batch]", "batch."),
    ("[serve]", "serve."),
    ("[speed]", "speed."),
    ("[[source]]", "source."),
    ("[[view]]", "view."),
    ("[fraud]", "fraud."),
    ("[[fraud.feature]]", "fraud.feature."),
    ("[[fraud.rule]]", "fraud.rule."),
    ("[schema_registry]", "schema_registry."),
];

/// The keys the config loader accepts in the table `open` starts: an unknown key there is
/// refused with the list of the known ones.
fn accepted_keys(open: &str) -> Vec<String> {
    let probe = format!("{open}\nno_such_key_probe = 1\n");
    let error = braid_shared::Config::from_toml(&probe)
        .expect_err("an unknown key is refused")
        .to_string();
    // serde lists them as `a`, ``a` or `b``, or `one of `a`, `b`, `c``.
    let expected = error
        .split_once("unknown field: found `no_such_key_probe`, expected ")
        .unwrap_or_else(|| panic!("{open}: the refusal lists no keys: {error}"))
        .1;
    let expected = expected.split(" (in ").next().unwrap_or(expected);
    expected
        .split('`')
        .map(str::trim)
        .filter(|word| {
            !word.is_empty()
                && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && *word != "or"
        })
        .map(str::to_owned)
        .collect()
}

/// Every accepted key that `doc` does not name as `prefix.key`.
fn undocumented_keys(doc: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for (open, prefix) in TABLES {
        for key in accepted_keys(open) {
            let dotted = format!("{prefix}{key}");
            let named = doc.match_indices(&dotted).any(|(at, _)| {
                let before = doc[..at].chars().next_back();
                let after = doc[at + dotted.len()..].chars().next();
                let boundary = |c: Option<char>| {
                    c.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.'))
                };
                boundary(before) && boundary(after)
            });
            if !named {
                missing.push(dotted);
            }
        }
    }
    missing
}

#[test]
fn every_configuration_key_is_documented() {
    // The loader's lists are what this test reads: they must hold the keys it knows of.
    assert!(accepted_keys("[serve]").contains(&"speed_peers".to_owned()));
    assert!(accepted_keys("").contains(&"fraud".to_owned()));
    let doc = std::fs::read_to_string("docs/configuration.md").unwrap();
    let missing = undocumented_keys(&doc);
    assert!(
        missing.is_empty(),
        "keys the config accepts that docs/configuration.md does not name: {missing:?}"
    );
    // A key taken out of the page is found missing.
    let planted = doc.replace("`serve.sql_timeout`", "`serve.sql time-out`");
    assert_eq!(
        undocumented_keys(&planted),
        vec!["serve.sql_timeout".to_owned()]
    );
}
