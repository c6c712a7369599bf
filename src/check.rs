//! `canary-notifier check`: the admission decision for Canaries in files, offline.

use crate::admission::{self, Verdict};
use crate::canary;
use crate::destination_policy::DestinationPolicy;
use json_patch::PatchOperation;
use serde::Serialize;
use serde_json::Value;
use std::io::Read;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: document {document} (line {line}): cannot parse YAML or JSON: {message}")]
    Parse {
        file: String,
        document: usize,
        line: usize,
        message: String,
    },
}

/// One Canary found in the input, with its verdict.
#[derive(Debug, Serialize)]
pub struct Checked {
    pub name: String,
    pub namespace: Option<String>,
    pub file: String,
    pub document: usize,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Splits a YAML stream at `---` lines, keeping 1-based document numbers and the
/// line each starts on, so a parse error can say where it is.
fn split_documents(text: &str) -> Vec<(usize, usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start_line = 1;
    for (i, line) in text.lines().enumerate() {
        let is_separator = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_separator {
            docs.push((start_line, std::mem::take(&mut current)));
            start_line = i + 2;
            // `--- {json: true}` carries content on the marker line.
            current.push_str(line[3..].trim_start());
            current.push('\n');
        } else if line == "..." {
            continue;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs.push((start_line, current));
    docs.into_iter()
        .enumerate()
        .map(|(i, (line, text))| (i + 1, line, text))
        .collect()
}

/// Parses every document of one input; empty documents are skipped.
pub fn parse_documents(file: &str, text: &str) -> Result<Vec<(usize, Value)>, InputError> {
    let mut out = Vec::new();
    for (document, line, doc) in split_documents(text) {
        if doc.trim().is_empty() {
            continue;
        }
        let value: Value = serde_saphyr::from_str(&doc).map_err(|e| InputError::Parse {
            file: file.to_string(),
            document,
            line,
            message: e.to_string(),
        })?;
        if !value.is_null() {
            out.push((document, value));
        }
    }
    Ok(out)
}

/// Canaries in a document, looking inside `kind: List` (and `*List`) items.
fn canaries_in(value: Value, out: &mut Vec<Value>) {
    let is_list = value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"));
    if is_list {
        if let Some(Value::Array(items)) = value.get("items").cloned() {
            for item in items {
                canaries_in(item, out);
            }
        }
    } else if canary::is_canary(&value) {
        out.push(value);
    }
}

fn read_input(path: &str) -> Result<(String, String), InputError> {
    let read_err = |source| InputError::Read {
        file: path.to_string(),
        source,
    };
    if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(read_err)?;
        Ok(("<stdin>".to_string(), text))
    } else {
        Ok((
            path.to_string(),
            std::fs::read_to_string(path).map_err(read_err)?,
        ))
    }
}

/// Reads and judges every Canary in `inputs` (`-` or none for stdin).
pub fn check_inputs(
    inputs: &[String],
    policy: &DestinationPolicy,
) -> Result<Vec<Checked>, InputError> {
    let stdin = ["-".to_string()];
    let inputs = if inputs.is_empty() {
        &stdin[..]
    } else {
        inputs
    };
    let mut checked = Vec::new();
    for path in inputs {
        let (file, text) = read_input(path)?;
        for (document, value) in parse_documents(&file, &text)? {
            let mut found = Vec::new();
            canaries_in(value, &mut found);
            for object in found {
                let meta = |k: &str| {
                    object
                        .get("metadata")
                        .and_then(|m| m.get(k))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                checked.push(Checked {
                    name: meta("name").unwrap_or_default(),
                    namespace: meta("namespace"),
                    file: file.clone(),
                    document,
                    verdict: admission::verdict(&object, policy),
                });
            }
        }
    }
    Ok(checked)
}

fn describe_op(op: &PatchOperation) -> String {
    match op {
        PatchOperation::Add(a) => format!("add {} = {}", a.path, a.value),
        PatchOperation::Replace(r) => format!("replace {} = {}", r.path, r.value),
        other => format!("{other:?}"),
    }
}

/// Human-readable report, one block per canary.
pub fn render_text(checked: &[Checked]) -> String {
    let mut out = String::new();
    for c in checked {
        let id = match &c.namespace {
            Some(ns) => format!("{ns}/{}", c.name),
            None => c.name.clone(),
        };
        let verdict = match (c.verdict.allowed, c.verdict.patch.is_empty()) {
            (false, _) => "denied",
            (true, true) => "allowed",
            (true, false) => "allowed with defaults",
        };
        out.push_str(&format!(
            "{}#{} Canary {id}: {verdict}\n",
            c.file, c.document
        ));
        for op in c.verdict.patch.iter() {
            out.push_str(&format!("  default: {}\n", describe_op(op)));
        }
        for e in &c.verdict.errors {
            out.push_str(&format!("  error: {e}\n"));
        }
        for w in &c.verdict.warnings {
            out.push_str(&format!("  warning: {w}\n"));
        }
    }
    let denied = checked.iter().filter(|c| !c.verdict.allowed).count();
    out.push_str(&format!(
        "{} canaries checked: {} allowed, {denied} denied\n",
        checked.len(),
        checked.len() - denied
    ));
    out
}

/// 0 when every canary is allowed, 1 when any is denied.
pub fn exit_code(checked: &[Checked]) -> u8 {
    if checked.iter().all(|c| c.verdict.allowed) {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_multi_document_yaml_with_line_numbers() {
        let text = "a: 1\n---\nb: 2\n--- {\"c\": 3}\n...\n---\n# only a comment\n";
        let docs = parse_documents("f.yaml", text).unwrap();
        let got: Vec<(usize, Value)> = docs;
        assert_eq!(
            got,
            vec![
                (1, serde_json::json!({"a": 1})),
                (2, serde_json::json!({"b": 2})),
                (3, serde_json::json!({"c": 3})),
            ]
        );
    }

    #[test]
    fn parse_errors_name_file_document_and_line() {
        let err = parse_documents("bad.yaml", "a: 1\n---\nb: [unclosed\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("bad.yaml: document 2 (line 3): cannot parse"),
            "{msg}"
        );
    }

    #[test]
    fn finds_canaries_in_lists_only() {
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": "a"}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}},
            {"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": "c"}}]}
        ]});
        let mut found = Vec::new();
        canaries_in(list, &mut found);
        let names: Vec<&str> = found
            .iter()
            .filter_map(|c| c["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names, ["a", "c"]);
    }
}
