//! A profile written back as TOML.

use toml_edit::{Item, Value};

use super::Profile;
use crate::duration::format_duration;

/// Write a profile as TOML that [`parse_profile`] reads back to the same
/// profile (given the same source). Useful as a starting point for a user
/// file that overrides a built-in. JSON `null`s in route configs have no
/// TOML form and are left out.
pub fn render_profile(p: &Profile) -> String {
    use toml_edit::{value, Array, ArrayOfTables, DocumentMut, Table};

    let mut doc = DocumentMut::new();
    doc["id"] = value(p.id.as_str());
    doc["version"] = value(i64::from(p.version));
    doc["description"] = value(p.description.as_str());
    if !p.aliases.is_empty() {
        doc["aliases"] = value(p.aliases.iter().map(String::as_str).collect::<Array>());
    }
    doc["default_ttl"] = value(format_duration(p.default_ttl));
    doc["max_ttl"] = value(format_duration(p.max_ttl));
    doc["ready_timeout"] = value(format_duration(p.ready_timeout));
    doc["policy"] = value(p.policy.as_str());
    doc["paused_retention"] = value(format_duration(p.paused_retention));
    if !p.paused_price_per_hour.is_zero() {
        doc["paused_price_per_hour"] = value(p.paused_price_per_hour.to_string());
    }
    if !p.snapshot_price_per_hour.is_zero() {
        doc["snapshot_price_per_hour"] = value(p.snapshot_price_per_hour.to_string());
    }
    if !p.inputs.is_empty() {
        let mut inputs = Table::new();
        inputs.set_implicit(true);
        for (name, spec) in &p.inputs {
            let mut t = Table::new();
            t["required"] = value(spec.required);
            t["help"] = value(spec.help.as_str());
            if let Some(d) = &spec.default {
                t["default"] = value(d.as_str());
            }
            inputs.insert(name, Item::Table(t));
        }
        doc["inputs"] = Item::Table(inputs);
    }
    let mut routes = ArrayOfTables::new();
    for r in &p.routes {
        let mut t = Table::new();
        t["extension"] = value(r.extension.as_str());
        t["placement"] = value(r.placement.iter().map(String::as_str).collect::<Array>());
        t["price_per_hour"] = value(r.price_per_hour.to_string());
        if !r.config.is_empty() {
            let mut config = Table::new();
            for (k, v) in &r.config {
                if let Some(v) = json_to_toml(v) {
                    config.insert(k, Item::Value(v));
                }
            }
            t["config"] = Item::Table(config);
        }
        routes.push(t);
    }
    doc["routes"] = Item::ArrayOfTables(routes);
    doc.to_string()
}

fn json_to_toml(v: &serde_json::Value) -> Option<Value> {
    use serde_json::Value as J;
    Some(match v {
        J::Null => return None,
        J::Bool(b) => Value::from(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => Value::from(n.as_f64()?),
        },
        J::String(s) => Value::from(s.as_str()),
        J::Array(a) => Value::Array(a.iter().filter_map(json_to_toml).collect()),
        J::Object(o) => {
            let mut t = toml_edit::InlineTable::new();
            for (k, v) in o {
                if let Some(v) = json_to_toml(v) {
                    t.insert(k, v);
                }
            }
            Value::InlineTable(t)
        }
    })
}
