//! Merging Compose files (`-f a.yaml -f b.yaml`, `compose.override.yaml`, `extends`) by the
//! Compose Specification's rules (merge.md): mappings merge key by key, sequences append,
//! scalars are overridden, and these exceptions hold:
//!
//! - `command`, `entrypoint` and `healthcheck.test` are replaced, not appended;
//! - `environment`, `labels`, `sysctls`, `annotations`, `extra_hosts`, `deploy.labels` and
//!   the `labels` of networks and volumes merge by key, whether written as lists or mappings;
//! - `ports` (by ip, target, published, protocol), `volumes` (by target) and `secrets` and
//!   `configs` (by target) replace an entry with the same key instead of adding it;
//! - `depends_on` and a service's `networks` merge by name in either form;
//! - `logging` is replaced when the driver changes; each `ulimits` entry is replaced;
//! - `!reset` removes a value, `!override` replaces it without merging.
//!
//! Appended sequences drop entries already present, as Docker Compose does for `dns`,
//! `cap_add` and the like. Nothing here fails: the reader validates the merged result.

use serde_yaml_ng::value::TaggedValue;
use serde_yaml_ng::{Mapping, Value};

/// How a key's values merge.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Mappings merge with `Field` children, sequences append, scalars override.
    Generic,
    /// The top of a file.
    Top,
    /// A mapping of named definitions (`services`, `networks`, ...), each merged with `each`.
    Named(Entry),
    /// One service.
    Service,
    /// Replaced whole.
    Replace,
    /// A list of `KEY=VALUE` or a mapping, merged by key (`sep` splits list items).
    ByKey(char),
    /// A sequence whose entries are unique by a key.
    Unique(UniqueBy),
    /// A list of names or a mapping by name; `depends_on` gives list names the long form's
    /// default condition.
    Names {
        depends_on: bool,
    },
    Logging,
    Healthcheck,
    Deploy,
    /// A mapping whose entries are each replaced (`ulimits`).
    EachReplaced,
    /// One network, volume, secret or config definition.
    Resource,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Entry {
    Service,
    /// Networks, volumes, secrets and configs: `labels` merge by key.
    Resource,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum UniqueBy {
    Port,
    Target,
}

/// Merges `over` into `base`, both whole files.
pub(crate) fn merge_files(base: &mut Mapping, over: Mapping) {
    merge_mapping(base, over, Rule::Top);
}

/// Merges the service `over` into `base` (for `extends`: the extending service wins).
pub(crate) fn merge_services(base: Value, over: Value) -> Value {
    merge(base, over, Rule::Service)
}

/// Applies `!reset` (the key is removed) and `!override` (the tag dropped) in a file that has
/// nothing under it to merge with.
pub(crate) fn strip_tags(map: &mut Mapping) {
    let keys: Vec<Value> = map.keys().cloned().collect();
    for key in keys {
        let Some(v) = map.get_mut(&key) else { continue };
        if let Some(kind) = tag_kind(v) {
            match kind {
                Tag::Reset => {
                    map.shift_remove(&key);
                    continue;
                }
                Tag::Override => *v = untag(v.clone()),
            }
        }
        strip_value(v);
    }
}

fn strip_value(v: &mut Value) {
    match v {
        Value::Mapping(m) => strip_tags(m),
        Value::Sequence(items) => {
            items.retain(|i| tag_kind(i) != Some(Tag::Reset));
            for item in items.iter_mut() {
                if tag_kind(item) == Some(Tag::Override) {
                    *item = untag(item.clone());
                }
                strip_value(item);
            }
        }
        _ => {}
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tag {
    Reset,
    Override,
}

fn tag_kind(v: &Value) -> Option<Tag> {
    match v {
        Value::Tagged(t) if t.tag == "reset" => Some(Tag::Reset),
        Value::Tagged(t) if t.tag == "override" => Some(Tag::Override),
        _ => None,
    }
}

fn untag(v: Value) -> Value {
    match v {
        Value::Tagged(t) => {
            let TaggedValue { value, .. } = *t;
            value
        }
        other => other,
    }
}

fn child_rule(parent: Rule, key: &str) -> Rule {
    match parent {
        Rule::Top => match key {
            "services" => Rule::Named(Entry::Service),
            "networks" | "volumes" | "secrets" | "configs" => Rule::Named(Entry::Resource),
            _ => Rule::Generic,
        },
        Rule::Named(Entry::Service) => Rule::Service,
        Rule::Named(Entry::Resource) => Rule::Resource,
        Rule::Service => match key {
            "command" | "entrypoint" => Rule::Replace,
            "environment" | "labels" | "sysctls" | "annotations" => Rule::ByKey('='),
            "extra_hosts" => Rule::ByKey(':'),
            "ports" => Rule::Unique(UniqueBy::Port),
            "volumes" | "secrets" | "configs" => Rule::Unique(UniqueBy::Target),
            "depends_on" => Rule::Names { depends_on: true },
            "networks" => Rule::Names { depends_on: false },
            "logging" => Rule::Logging,
            "healthcheck" => Rule::Healthcheck,
            "deploy" => Rule::Deploy,
            "ulimits" => Rule::EachReplaced,
            _ => Rule::Generic,
        },
        Rule::Healthcheck if key == "test" => Rule::Replace,
        Rule::Deploy if key == "labels" => Rule::ByKey('='),
        Rule::EachReplaced => Rule::Replace,
        Rule::Resource => {
            if key == "labels" {
                Rule::ByKey('=')
            } else {
                Rule::Generic
            }
        }
        _ => Rule::Generic,
    }
}

fn merge(base: Value, over: Value, rule: Rule) -> Value {
    match tag_kind(&over) {
        Some(Tag::Reset) => return Value::Null,
        Some(Tag::Override) => return stripped(untag(over)),
        None => {}
    }
    match rule {
        Rule::Replace => stripped(over),
        Rule::ByKey(sep) => merge_by_key(base, over, sep),
        Rule::Unique(by) => merge_unique(base, stripped(over), by),
        Rule::Names { depends_on } => merge_names(base, over, depends_on),
        Rule::Logging => {
            let driver = |v: &Value| v.get("driver").cloned();
            match (driver(&base), driver(&over)) {
                (Some(a), Some(b)) if a != b => stripped(over),
                _ => merge_generic(base, over, rule),
            }
        }
        _ => merge_generic(base, over, rule),
    }
}

/// `value` with its `!reset` and `!override` tags applied, for a value taken without merging.
fn stripped(mut value: Value) -> Value {
    strip_value(&mut value);
    value
}

fn merge_generic(base: Value, over: Value, rule: Rule) -> Value {
    match (base, stripped_unless_mapping(over)) {
        (Value::Mapping(mut b), Value::Mapping(o)) => {
            merge_mapping(&mut b, o, rule);
            Value::Mapping(b)
        }
        (Value::Sequence(mut b), Value::Sequence(o)) => {
            for item in o {
                if !b.contains(&item) {
                    b.push(item);
                }
            }
            Value::Sequence(b)
        }
        // A list key written as one string in one file (`dns: 8.8.8.8`) appends too.
        (Value::Sequence(mut b), o @ Value::String(_)) => {
            if !b.contains(&o) {
                b.push(o);
            }
            Value::Sequence(b)
        }
        (_, Value::Mapping(mut o)) => {
            strip_tags(&mut o);
            Value::Mapping(o)
        }
        (_, over) => over,
    }
}

/// Mappings keep their tags for `merge_mapping`, which applies them against the base.
fn stripped_unless_mapping(value: Value) -> Value {
    match value {
        Value::Mapping(_) => value,
        other => stripped(other),
    }
}

fn merge_mapping(base: &mut Mapping, over: Mapping, rule: Rule) {
    for (key, o) in over {
        let child = child_rule(rule, key.as_str().unwrap_or_default());
        if tag_kind(&o) == Some(Tag::Reset) {
            base.shift_remove(&key);
            continue;
        }
        match base.get_mut(&key) {
            // In place, so that the base file's key order (the services' order) is kept.
            Some(slot) => {
                let b = std::mem::take(slot);
                *slot = merge(b, o, child);
            }
            None => {
                let mut o = untag(o);
                strip_value(&mut o);
                base.insert(key, o);
            }
        }
    }
}

/// `environment`-like keys: both sides as `(key, value)` entries, `over` winning. Two lists stay
/// a list, anything else becomes a mapping.
fn merge_by_key(base: Value, over: Value, sep: char) -> Value {
    let both_lists = matches!((&base, &over), (Value::Sequence(_), Value::Sequence(_)));
    let mut entries = keyed_entries(base, sep);
    for (k, v) in keyed_entries(over, sep) {
        if tag_kind(&v) == Some(Tag::Reset) {
            entries.retain(|(key, _)| *key != k);
            continue;
        }
        let v = stripped(untag(v));
        match entries.iter_mut().find(|(key, _)| *key == k) {
            Some(slot) => slot.1 = v,
            None => entries.push((k, v)),
        }
    }
    if both_lists {
        return Value::Sequence(
            entries
                .into_iter()
                .map(|(k, v)| match v {
                    Value::Null => k,
                    v => Value::String(format!("{}{sep}{}", scalar_text(&k), scalar_text(&v))),
                })
                .collect(),
        );
    }
    Value::Mapping(entries.into_iter().collect())
}

/// A list's `KEY=VALUE` items (a bare `KEY` has no value) or a mapping's entries; anything else
/// is kept as one opaque entry for the reader to refuse.
fn keyed_entries(value: Value, sep: char) -> Vec<(Value, Value)> {
    match value {
        Value::Mapping(m) => m.into_iter().collect(),
        Value::Sequence(items) => items
            .into_iter()
            .map(|item| match &item {
                Value::String(s) => {
                    // `extra_hosts` allows `=` too, and an IPv6 address contains `:`.
                    let split = if sep == ':' {
                        s.split_once('=').or_else(|| s.split_once(':'))
                    } else {
                        s.split_once(sep)
                    };
                    match split {
                        Some((k, v)) => (Value::String(k.into()), Value::String(v.into())),
                        None => (item.clone(), Value::Null),
                    }
                }
                _ => (item, Value::Null),
            })
            .collect(),
        Value::Null => Vec::new(),
        other => vec![(other, Value::Null)],
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => serde_yaml_ng::to_string(other)
            .unwrap_or_default()
            .trim_end()
            .to_string(),
    }
}

/// `ports`, `volumes`, `secrets`, `configs`: an `over` entry replaces the `base` entry with
/// the same key, or is appended.
fn merge_unique(base: Value, over: Value, by: UniqueBy) -> Value {
    let (Value::Sequence(mut b), Value::Sequence(o)) = (base, over.clone()) else {
        return over;
    };
    for item in o {
        let key = unique_key(&item, by);
        let same = b
            .iter()
            .position(|e| key.is_some() && unique_key(e, by) == key);
        match same {
            Some(i) => b[i] = item,
            None if !b.contains(&item) => b.push(item),
            None => {}
        }
    }
    Value::Sequence(b)
}

fn unique_key(item: &Value, by: UniqueBy) -> Option<String> {
    match (by, item) {
        (UniqueBy::Target, Value::String(s)) => {
            // `SOURCE:TARGET[:MODE]` or `TARGET` for volumes; a secret's short form is its
            // source, which is also its target's name.
            let parts: Vec<&str> = s.split(':').collect();
            Some(match parts.as_slice() {
                [one] => (*one).to_string(),
                [_, target, ..] => (*target).to_string(),
                [] => return None,
            })
        }
        (UniqueBy::Target, Value::Mapping(m)) => {
            m.get("target").or_else(|| m.get("source")).map(scalar_text)
        }
        (UniqueBy::Port, Value::String(s)) => Some(short_port_key(s)),
        (UniqueBy::Port, Value::Number(n)) => Some(format!("|{n}||tcp")),
        (UniqueBy::Port, Value::Mapping(m)) => {
            let field = |k: &str| m.get(k).map(scalar_text).unwrap_or_default();
            let protocol = m
                .get("protocol")
                .map(scalar_text)
                .unwrap_or_else(|| "tcp".into());
            Some(format!(
                "{}|{}|{}|{protocol}",
                field("host_ip"),
                field("target"),
                field("published")
            ))
        }
        _ => None,
    }
}

/// `[IP:][PUBLISHED:]TARGET[/PROTOCOL]` as `ip|target|published|protocol`, the long form's key.
fn short_port_key(s: &str) -> String {
    let (rest, protocol) = s.rsplit_once('/').unwrap_or((s, "tcp"));
    let (rest, target) = rest.rsplit_once(':').unwrap_or(("", rest));
    let (ip, published) = match rest.rsplit_once(':') {
        Some((ip, published)) => (ip, published),
        None => ("", rest),
    };
    format!("{ip}|{target}|{published}|{protocol}")
}

/// `depends_on` and a service's `networks`: a list of names or a mapping by name. Two lists stay
/// a list; otherwise list names become mapping keys (with no settings) and entries merge.
fn merge_names(base: Value, over: Value, depends_on: bool) -> Value {
    match (base, over) {
        (Value::Sequence(mut b), Value::Sequence(o)) => {
            for item in stripped_items(o) {
                if !b.contains(&item) {
                    b.push(item);
                }
            }
            Value::Sequence(b)
        }
        (base, over) => {
            let mut b = names_mapping(base, depends_on);
            for (k, v) in names_mapping(over, depends_on) {
                if tag_kind(&v) == Some(Tag::Reset) {
                    b.shift_remove(&k);
                    continue;
                }
                match b.get_mut(&k) {
                    Some(slot) => {
                        let old = std::mem::take(slot);
                        *slot = merge(old, v, Rule::Generic);
                    }
                    None => {
                        b.insert(k, stripped(untag(v)));
                    }
                }
            }
            Value::Mapping(b)
        }
    }
}

fn stripped_items(items: Vec<Value>) -> Vec<Value> {
    match stripped(Value::Sequence(items)) {
        Value::Sequence(items) => items,
        _ => Vec::new(),
    }
}

fn names_mapping(value: Value, depends_on: bool) -> Mapping {
    let settings = || {
        if depends_on {
            let mut m = Mapping::new();
            m.insert("condition".into(), "service_started".into());
            Value::Mapping(m)
        } else {
            Value::Null
        }
    };
    match value {
        Value::Mapping(m) => m,
        Value::Sequence(items) => items.into_iter().map(|i| (i, settings())).collect(),
        Value::Null => Mapping::new(),
        other => std::iter::once((other, settings())).collect(),
    }
}
