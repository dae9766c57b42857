//! Merging a service over the one it `extends`, by the rules of the specification
//! (05-services.md "Merging service definitions", 13-merge.md): mappings merge key by key,
//! sequences append (`ports`, `expose` and the other listed ones without duplicates),
//! `volumes` merge by container path, `command`, `entrypoint` and `healthcheck.test` are
//! replaced, other scalars are replaced; `!reset` clears a value and `!override` replaces it
//! whole.

use serde_norway::value::TaggedValue;
use serde_norway::{Mapping, Value};

/// Service keys whose list or `KEY=VALUE` forms merge as maps.
const MAP_KEYS: &[&str] = &[
    "annotations",
    "environment",
    "labels",
    "extra_hosts",
    "sysctls",
];

/// Service keys whose lists merge without duplicates.
const UNIQUE_SEQUENCES: &[&str] = &[
    "cap_add",
    "cap_drop",
    "configs",
    "device_cgroup_rules",
    "expose",
    "external_links",
    "ports",
    "secrets",
    "security_opt",
];

/// Service keys that are replaced, never merged.
const REPLACED: &[&str] = &["command", "entrypoint"];

/// `over` (the service as written) merged over `base` (the service it extends).
pub(super) fn merge_service(base: Mapping, over: Mapping) -> Mapping {
    let mut merged = base;
    for (key, value) in over {
        let name = key.as_str().unwrap_or_default().to_string();
        if let Some(tag) = tag_of(&value) {
            match tag {
                Tag::Reset => {
                    merged.remove(&key);
                }
                Tag::Override(inner) => {
                    merged.insert(key, inner);
                }
            }
            continue;
        }
        let combined = match merged.remove(&key) {
            None => value,
            Some(previous) => merge_key(&name, previous, value),
        };
        merged.insert(key, combined);
    }
    merged
}

fn merge_key(key: &str, base: Value, over: Value) -> Value {
    if REPLACED.contains(&key) {
        return over;
    }
    if MAP_KEYS.contains(&key) {
        return Value::Mapping(merge_maps(as_map(base), as_map(over)));
    }
    match (key, base, over) {
        ("volumes" | "devices", Value::Sequence(base), Value::Sequence(over)) => {
            Value::Sequence(merge_by_target(base, over))
        }
        ("healthcheck", Value::Mapping(base), Value::Mapping(over)) => {
            Value::Mapping(merge_maps(base, over))
        }
        ("build" | "deploy" | "logging", Value::Mapping(base), Value::Mapping(over)) => {
            Value::Mapping(merge_deep(base, over))
        }
        (key, Value::Sequence(mut base), Value::Sequence(over)) => {
            let unique = UNIQUE_SEQUENCES.contains(&key);
            for item in over {
                if !(unique && base.contains(&item)) {
                    base.push(item);
                }
            }
            Value::Sequence(base)
        }
        (_, Value::Mapping(base), Value::Mapping(over)) => Value::Mapping(merge_maps(base, over)),
        (_, _, over) => over,
    }
}

/// Key by key, `over` winning; `!reset` removes a key.
fn merge_maps(mut base: Mapping, over: Mapping) -> Mapping {
    for (key, value) in over {
        match tag_of(&value) {
            Some(Tag::Reset) => {
                base.remove(&key);
            }
            Some(Tag::Override(inner)) => {
                base.insert(key, inner);
            }
            None => {
                base.insert(key, value);
            }
        }
    }
    base
}

/// Maps merged recursively (`build.args`, `deploy.resources.limits`…), lists appended.
fn merge_deep(mut base: Mapping, over: Mapping) -> Mapping {
    for (key, value) in over {
        if let Some(tag) = tag_of(&value) {
            match tag {
                Tag::Reset => base.remove(&key),
                Tag::Override(inner) => base.insert(key, inner),
            };
            continue;
        }
        let combined = match (base.remove(&key), value) {
            (Some(Value::Mapping(b)), Value::Mapping(o)) => Value::Mapping(merge_deep(b, o)),
            (Some(Value::Sequence(mut b)), Value::Sequence(o)) => {
                b.extend(o);
                Value::Sequence(b)
            }
            (_, value) => value,
        };
        base.insert(key, combined);
    }
    base
}

/// `volumes` / `devices`: an entry of `over` replaces the entry of `base` with the same
/// container path, others are appended.
fn merge_by_target(mut base: Vec<Value>, over: Vec<Value>) -> Vec<Value> {
    for item in over {
        let target = mount_target(&item);
        match base
            .iter()
            .position(|existing| target.is_some() && mount_target(existing) == target)
        {
            Some(index) => base[index] = item,
            None => base.push(item),
        }
    }
    base
}

/// The container path of a short (`src:/target[:mode]`, `/target`) or long entry.
fn mount_target(item: &Value) -> Option<String> {
    match item {
        Value::String(text) => {
            let parts: Vec<&str> = text.split(':').collect();
            Some(match parts.as_slice() {
                [target] => target.to_string(),
                [_, target, ..] => target.to_string(),
                [] => return None,
            })
        }
        Value::Mapping(map) => map
            .get("target")
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

/// A `KEY=VALUE` list (or a map) as a map; `KEY` alone maps to null.
pub(super) fn as_map(value: Value) -> Mapping {
    match value {
        Value::Mapping(map) => map,
        Value::Sequence(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(text) => match text.split_once('=') {
                    Some((key, value)) => (Value::from(key), Value::from(value)),
                    None => (Value::from(text), Value::Null),
                },
                other => (other, Value::Null),
            })
            .collect(),
        _ => Mapping::new(),
    }
}

enum Tag {
    Reset,
    Override(Value),
}

fn tag_of(value: &Value) -> Option<Tag> {
    let Value::Tagged(tagged) = value else {
        return None;
    };
    let TaggedValue { tag, value } = tagged.as_ref();
    if tag == "reset" {
        Some(Tag::Reset)
    } else if tag == "override" {
        Some(Tag::Override(value.clone()))
    } else {
        None
    }
}

/// Removes the merge tags from a service read on its own (no base to merge over): `!reset`
/// drops the key, `!override` keeps the value.
pub(super) fn strip_tags(service: &mut Mapping) {
    let keys: Vec<Value> = service.keys().cloned().collect();
    for key in keys {
        match service.get(&key).and_then(tag_of) {
            Some(Tag::Reset) => {
                service.remove(&key);
            }
            Some(Tag::Override(inner)) => {
                service.insert(key, inner);
            }
            None => {
                if let Some(Value::Mapping(nested)) = service.get_mut(&key) {
                    strip_tags(nested);
                }
            }
        }
    }
}
