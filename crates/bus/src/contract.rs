//! Event contracts: each event type's JSON schema and the rule by which it may change.
//!
//! An event is read by consumers that may run the previous version of the code (during a
//! rolling upgrade, or replaying a stream written before it), and consumers of the previous
//! version read what today's producers write. So an event type only grows: a change may add
//! optional fields; it may not remove, rename or retype a field, make a field required, or
//! stop requiring one. A breaking change is a new event type, with a subject of its own.
//!
//! [`breaking_changes`] checks that rule between the schema of the previous version and
//! today's; [`sample`] writes an event as a schema describes it, so a test can feed
//! today's types the events of the previous version; [`conforms`] checks an event against
//! a schema, so a test can check that the previous version's consumers accept today's.

use serde_json::{Map, Value};

pub use schemars::JsonSchema;

/// The JSON schema (draft 2020-12) of the payload `T`.
pub fn schema_of<T: JsonSchema>() -> Value {
    schemars::schema_for!(T).to_value()
}

/// How `new` breaks readers or writers of `old`: one sentence per break, naming the field
/// (`lines[].item_id`); empty when `new` only adds optional fields.
pub fn breaking_changes(old: &Value, new: &Value) -> Vec<String> {
    let mut breaks = Vec::new();
    compare(
        &Root(old),
        old,
        &Root(new),
        new,
        &mut String::new(),
        &mut breaks,
    );
    breaks
}

/// An instance of `schema`: every property present when `all`, only the required ones
/// otherwise; strings `"x"` (or a valid date-time), numbers 1, the first value of an enum.
pub fn sample(schema: &Value, all: bool) -> Value {
    sample_of(&Root(schema), schema, all, 0)
}

/// Whether `instance` is accepted by a reader of `schema`: every required property present
/// and every property with a type the schema allows; unknown properties are ignored, as
/// serde ignores them. The first mismatch, naming the field, when not.
pub fn conforms(instance: &Value, schema: &Value) -> Result<(), String> {
    check(&Root(schema), schema, instance, &mut String::new())
}

/// The document a schema's `$ref`s point into.
struct Root<'a>(&'a Value);

impl<'a> Root<'a> {
    /// `node`, with a local `$ref` (`#/$defs/Name`) followed.
    fn resolve(&self, node: &'a Value) -> &'a Value {
        let mut node = node;
        for _ in 0..16 {
            let Some(pointer) = node.get("$ref").and_then(Value::as_str) else {
                return node;
            };
            match pointer.strip_prefix('#').and_then(|p| self.0.pointer(p)) {
                Some(target) => node = target,
                None => return node,
            }
        }
        node
    }
}

/// The JSON types a node allows, sorted (`["null", "string"]`); none when it names none.
fn types(node: &Value) -> Vec<String> {
    let mut types: Vec<String> = match node.get("type") {
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) => many
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    types.sort();
    types
}

fn properties(node: &Value) -> Option<&Map<String, Value>> {
    node.get("properties").and_then(Value::as_object)
}

fn required(node: &Value) -> Vec<&str> {
    node.get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The alternatives of a node (`anyOf`/`oneOf`, as `Option` of a named type is written).
fn alternatives(node: &Value) -> Option<&Vec<Value>> {
    node.get("anyOf")
        .or_else(|| node.get("oneOf"))
        .and_then(Value::as_array)
}

fn named(path: &str) -> &str {
    if path.is_empty() { "the payload" } else { path }
}

fn compare(
    old_root: &Root<'_>,
    old: &Value,
    new_root: &Root<'_>,
    new: &Value,
    path: &mut String,
    breaks: &mut Vec<String>,
) {
    let (old, new) = (old_root.resolve(old), new_root.resolve(new));
    let (old_types, new_types) = (types(old), types(new));
    if old_types != new_types {
        breaks.push(format!(
            "{} changed type from {old_types:?} to {new_types:?}",
            named(path)
        ));
        return;
    }
    if old.get("enum") != new.get("enum") || old.get("const") != new.get("const") {
        breaks.push(format!("{} changed its allowed values", named(path)));
    }
    match (alternatives(old), alternatives(new)) {
        (None, None) => {}
        (Some(a), Some(b)) if a.len() == b.len() => {
            for (a, b) in a.iter().zip(b) {
                compare(old_root, a, new_root, b, path, breaks);
            }
        }
        _ => breaks.push(format!("{} changed its alternatives", named(path))),
    }
    if let (Some(a), Some(b)) = (old.get("items"), new.get("items")) {
        let len = path.len();
        path.push_str("[]");
        compare(old_root, a, new_root, b, path, breaks);
        path.truncate(len);
    }
    let empty = Map::new();
    let (old_props, new_props) = (
        properties(old).unwrap_or(&empty),
        properties(new).unwrap_or(&empty),
    );
    let (old_required, new_required) = (required(old), required(new));
    for (name, old_field) in old_props {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(name);
        match new_props.get(name) {
            None => breaks.push(format!("{path} was removed")),
            Some(new_field) => {
                let (was, is) = (
                    old_required.contains(&name.as_str()),
                    new_required.contains(&name.as_str()),
                );
                if was && !is {
                    breaks.push(format!("{path} is no longer required"));
                }
                if !was && is {
                    breaks.push(format!("{path} became required"));
                }
                compare(old_root, old_field, new_root, new_field, path, breaks);
            }
        }
        path.truncate(len);
    }
    for name in new_required {
        if !old_props.contains_key(name) {
            let prefix = if path.is_empty() { "" } else { "." };
            breaks.push(format!(
                "{path}{prefix}{name} was added as a required field"
            ));
        }
    }
}

fn sample_of(root: &Root<'_>, node: &Value, all: bool, depth: usize) -> Value {
    let node = root.resolve(node);
    if depth > 12 {
        return Value::Null;
    }
    if let Some(value) = node.get("const") {
        return value.clone();
    }
    if let Some(first) = node
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|v| v.first())
    {
        return first.clone();
    }
    if let Some(first) = alternatives(node).and_then(|a| a.first()) {
        return sample_of(root, first, all, depth + 1);
    }
    let types = types(node);
    let kind = types
        .iter()
        .find(|t| *t != "null")
        .map_or("null", String::as_str);
    match kind {
        "object" => {
            let wanted = required(node);
            let mut object = Map::new();
            for (name, field) in properties(node).into_iter().flatten() {
                if all || wanted.contains(&name.as_str()) {
                    object.insert(name.clone(), sample_of(root, field, all, depth + 1));
                }
            }
            Value::Object(object)
        }
        "array" => match node.get("items") {
            Some(items) => Value::Array(vec![sample_of(root, items, all, depth + 1)]),
            None => Value::Array(Vec::new()),
        },
        "string" => match node.get("format").and_then(Value::as_str) {
            Some("date-time") => Value::from("2026-01-01T00:00:00Z"),
            Some("uuid") => Value::from("00000000-0000-7000-8000-000000000000"),
            _ => Value::from("x"),
        },
        "integer" | "number" => {
            let least = node.get("minimum").and_then(Value::as_i64).unwrap_or(1);
            Value::from(least.max(1))
        }
        "boolean" => Value::Bool(true),
        _ => Value::Null,
    }
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check(root: &Root<'_>, node: &Value, value: &Value, path: &mut String) -> Result<(), String> {
    let node = root.resolve(node);
    if let Some(allowed) = node.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!("{} has a value outside {allowed:?}", named(path)));
    }
    if let Some(options) = alternatives(node) {
        return if options
            .iter()
            .any(|option| check(root, option, value, &mut path.clone()).is_ok())
        {
            Ok(())
        } else {
            Err(format!("{} matches none of its alternatives", named(path)))
        };
    }
    let allowed = types(node);
    let actual = type_of(value);
    let fits = allowed.is_empty()
        || allowed
            .iter()
            .any(|t| t == actual || (t == "number" && actual == "integer"));
    if !fits {
        return Err(format!(
            "{} is {actual}, the reader expects {allowed:?}",
            named(path)
        ));
    }
    match value {
        Value::Object(object) => {
            for name in required(node) {
                if !object.contains_key(name) {
                    let prefix = if path.is_empty() { "" } else { "." };
                    return Err(format!("{path}{prefix}{name} is missing"));
                }
            }
            for (name, field) in properties(node).into_iter().flatten() {
                if let Some(inner) = object.get(name) {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(name);
                    check(root, field, inner, path)?;
                    path.truncate(len);
                }
            }
            Ok(())
        }
        Value::Array(items) => match node.get("items") {
            Some(schema) => {
                let len = path.len();
                path.push_str("[]");
                for item in items {
                    check(root, schema, item, path)?;
                }
                path.truncate(len);
                Ok(())
            }
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize, JsonSchema)]
    struct Line {
        item_id: String,
        quantity: i64,
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    struct V1 {
        order_id: String,
        lines: Vec<Line>,
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    struct AddsOptional {
        order_id: String,
        lines: Vec<Line>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email: Option<String>,
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    struct AddsRequired {
        order_id: String,
        lines: Vec<Line>,
        email: String,
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    struct Removes {
        lines: Vec<Line>,
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    struct LineRetyped {
        item_id: i64,
        quantity: i64,
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    struct Retypes {
        order_id: String,
        lines: Vec<LineRetyped>,
    }

    #[test]
    fn an_added_optional_field_is_the_only_allowed_change() {
        let v1 = schema_of::<V1>();
        assert!(breaking_changes(&v1, &v1).is_empty());
        assert!(breaking_changes(&v1, &schema_of::<AddsOptional>()).is_empty());
        assert_eq!(
            breaking_changes(&v1, &schema_of::<AddsRequired>()),
            ["email was added as a required field"]
        );
        assert_eq!(
            breaking_changes(&v1, &schema_of::<Removes>()),
            ["order_id was removed"]
        );
        assert_eq!(
            breaking_changes(&v1, &schema_of::<Retypes>()),
            [r#"lines[].item_id changed type from ["string"] to ["integer"]"#]
        );
        // Dropping a field readers of v2 may rely on is a break too, seen the other way.
        assert_eq!(
            breaking_changes(&schema_of::<AddsOptional>(), &v1),
            ["email was removed"]
        );
    }

    #[test]
    fn samples_of_a_schema_decode_into_its_type_and_old_events_into_the_new_one() {
        for all in [true, false] {
            let v1 = sample(&schema_of::<V1>(), all);
            assert!(serde_json::from_value::<V1>(v1.clone()).is_ok(), "{v1}");
            assert!(serde_json::from_value::<AddsOptional>(v1.clone()).is_ok());
            // A reader that needs a field v1 never wrote cannot read v1.
            assert!(serde_json::from_value::<AddsRequired>(v1).is_err());
        }
        let full = sample(&schema_of::<AddsOptional>(), true);
        assert!(full.get("email").is_some());
        assert!(
            sample(&schema_of::<AddsOptional>(), false)
                .get("email")
                .is_none()
        );
    }

    #[test]
    fn conformance_names_the_first_field_a_reader_would_refuse() {
        let v1 = schema_of::<V1>();
        let new = serde_json::to_value(AddsOptional {
            order_id: "o1".into(),
            lines: vec![Line {
                item_id: "i1".into(),
                quantity: 2,
            }],
            email: Some("a@b.c".into()),
        })
        .unwrap();
        assert_eq!(conforms(&new, &v1), Ok(()));
        let missing = serde_json::json!({ "lines": [] });
        assert_eq!(
            conforms(&missing, &v1),
            Err("order_id is missing".to_owned())
        );
        let retyped =
            serde_json::json!({ "order_id": "o1", "lines": [{ "item_id": 7, "quantity": 1 }] });
        assert_eq!(
            conforms(&retyped, &v1),
            Err(r#"lines[].item_id is integer, the reader expects ["string"]"#.to_owned())
        );
    }
}
