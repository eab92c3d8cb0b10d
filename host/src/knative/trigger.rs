//! The Knative Eventing Trigger (`eventing.knative.dev/v1`) that has a
//! broker deliver the events the manifest's functions take to the Service.
//!
//! One Trigger for the whole host, not one per function or per trigger: a
//! broker delivers an event once for every Trigger it matches, while the
//! host sends each delivery to the one most specific function, so
//! overlapping Triggers (`com.example.*` and `com.example.order.created`)
//! would deliver one event twice to the same function. One Trigger whose
//! filter takes what any function takes delivers each event once, and
//! leaves the choice of function to the host.
//!
//! The filter is written in the `filters` field (Knative's "new trigger
//! filters", on by default since Knative Eventing 1.12 and GA since 1.15;
//! the CloudEvents Subscriptions API's dialects): `exact` and `prefix` are
//! the host's exact and prefix conditions, each on one attribute, `all`
//! joins the conditions of one trigger, `any` the triggers. A condition on
//! any value is left out, so a trigger that takes every event makes a
//! Trigger without filters. The older `filter` field could not be used:
//! it has only exact matches, all of which must hold.

use std::collections::BTreeMap;

use serde::Serialize;

use super::service::ObjectMeta;
use super::{Eventing, Events, Options, read_as_text_by_kubernetes};
use crate::events::trigger::{Filter, Trigger as Conditions};
use crate::manifest::Manifest;

/// A Knative Trigger.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// `eventing.knative.dev/v1`.
    pub api_version: &'static str,
    /// `Trigger`.
    pub kind: &'static str,
    /// Named after the Service, in its namespace.
    pub metadata: ObjectMeta,
    /// Which broker's events, which of them, and where to.
    pub spec: TriggerSpec,
}

/// What a Trigger takes and where it delivers.
#[derive(Debug, Clone, Serialize)]
pub struct TriggerSpec {
    /// The broker whose events it takes.
    pub broker: String,
    /// Every expression must hold; none takes every event.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Expression>,
    /// The host's Service.
    pub subscriber: Subscriber,
}

/// A filter expression, written as a map of one key: its dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expression {
    /// The attribute has exactly this value.
    Exact(BTreeMap<&'static str, String>),
    /// The attribute's value starts with this.
    Prefix(BTreeMap<&'static str, String>),
    /// Every expression holds.
    All(Vec<Expression>),
    /// At least one expression holds.
    Any(Vec<Expression>),
}

impl Serialize for Expression {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        match self {
            Self::Exact(condition) => map.serialize_entry("exact", condition)?,
            Self::Prefix(condition) => map.serialize_entry("prefix", condition)?,
            Self::All(all) => map.serialize_entry("all", all)?,
            Self::Any(any) => map.serialize_entry("any", any)?,
        }
        map.end()
    }
}

/// Where a Trigger delivers: the Service, at its root (the host's default
/// events path, which `host knative`'s Service keeps).
#[derive(Debug, Clone, Serialize)]
pub struct Subscriber {
    /// The Knative Service.
    #[serde(rename = "ref")]
    pub reference: ObjectReference,
}

/// A reference to an object in the Trigger's namespace.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    /// `serving.knative.dev/v1`.
    pub api_version: &'static str,
    /// `Service`.
    pub kind: &'static str,
    /// The Service's name.
    pub name: String,
}

impl Trigger {
    /// The Trigger for `manifest`'s functions, if it needs one. Refuses a
    /// condition that Kubernetes would read back as other than the text
    /// written, naming its function.
    pub fn new(manifest: &Manifest, options: &Options) -> Result<Option<Self>, String> {
        let Eventing { broker, events } = &options.eventing;
        let mut triggers = Vec::new();
        for function in &manifest.functions {
            for trigger in &function.events {
                let conditions = conditions(trigger).map_err(|why| {
                    format!(
                        "function `{}`, trigger `{trigger}`: cannot be written for Knative: {why}",
                        function.name
                    )
                })?;
                triggers.push(conditions);
            }
        }
        let filters = match events {
            Events::All => Vec::new(),
            Events::OfTheManifest if triggers.is_empty() => return Ok(None),
            Events::OfTheManifest => filters(triggers),
        };
        Ok(Some(Self {
            api_version: "eventing.knative.dev/v1",
            kind: "Trigger",
            metadata: ObjectMeta::named(options),
            spec: TriggerSpec {
                broker: broker.to_string(),
                filters,
                subscriber: Subscriber {
                    reference: ObjectReference {
                        api_version: "serving.knative.dev/v1",
                        kind: "Service",
                        name: options.name.to_string(),
                    },
                },
            },
        }))
    }
}

/// A trigger's conditions, one expression each; none when it takes every
/// event.
fn conditions(trigger: &Conditions) -> Result<Vec<Expression>, String> {
    let given = [
        ("type", &trigger.ty),
        ("source", &trigger.source),
        ("subject", &trigger.subject),
    ];
    let mut conditions = Vec::new();
    for (attribute, filter) in given {
        let (value, dialect): (&String, fn(_) -> Expression) = match filter {
            Filter::Any => continue,
            Filter::Exact(value) => (value, Expression::Exact),
            Filter::Prefix(prefix) => (prefix, Expression::Prefix),
        };
        read_as_text_by_kubernetes(value)?;
        conditions.push(dialect(BTreeMap::from([(attribute, value.clone())])));
    }
    Ok(conditions)
}

/// The Trigger's filters for these triggers' conditions: an event passes
/// when it meets every condition of at least one trigger.
fn filters(triggers: Vec<Vec<Expression>>) -> Vec<Expression> {
    if triggers.iter().any(Vec::is_empty) {
        // A trigger without conditions takes every event.
        return Vec::new();
    }
    let mut each: Vec<Expression> = triggers.into_iter().map(all_of).collect();
    if each.len() > 1 {
        each = vec![Expression::Any(each)];
    }
    each
}

/// The expression that holds when all of `expressions` (at least one) do.
fn all_of(mut expressions: Vec<Expression>) -> Expression {
    if expressions.len() == 1 {
        expressions.remove(0)
    } else {
        Expression::All(expressions)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{manifest, options};
    use super::super::{Eventing, Events};
    use super::*;
    use crate::events::trigger::Triggers;

    /// Whether `event` (attribute name to value) passes `expression`, as
    /// Knative documents the dialects. An event lacking the attribute fails
    /// `exact` and `prefix` whether Knative reads it as missing or as empty
    /// text: the values written are never empty.
    fn passes(expression: &Expression, event: &BTreeMap<&str, &str>) -> bool {
        fn one<'a>(
            map: &'a BTreeMap<&'static str, String>,
            event: &BTreeMap<&str, &'a str>,
        ) -> (Option<&'a str>, &'a str) {
            assert_eq!(map.len(), 1, "a dialect takes one attribute");
            let (attribute, value) = map.iter().next().unwrap();
            (event.get(attribute).copied(), value.as_str())
        }
        match expression {
            Expression::Exact(map) => {
                let (have, want) = one(map, event);
                have == Some(want)
            }
            Expression::Prefix(map) => {
                let (have, want) = one(map, event);
                have.is_some_and(|have| have.starts_with(want))
            }
            Expression::All(all) => all.iter().all(|e| passes(e, event)),
            Expression::Any(any) => any.iter().any(|e| passes(e, event)),
        }
    }

    /// `options(None)` taking `events` from `broker`.
    fn eventing(broker: &str, events: Events) -> Options {
        Options {
            eventing: Eventing {
                broker: broker.parse().unwrap(),
                events,
            },
            ..options(None)
        }
    }

    fn trigger(text: &str) -> Trigger {
        Trigger::new(&manifest(text), &options(None))
            .unwrap()
            .expect("a Trigger")
    }

    const SHOP: &str = r#"
[[function]]
name = "orders"
component = "orders.wasm"
events = [
    { type = "com.example.order.created" },
    { type = "com.example.refund.*", source = "/shop/*" },
]

[[function]]
name = "audit"
component = "audit.wasm"
routes = ["/audit"]
events = [{ type = "com.example.*", subject = "eu-*" }, { source = "/shop/admin" }]
"#;

    #[test]
    fn the_broker_passes_exactly_the_events_some_function_takes() {
        let manifest = manifest(SHOP);
        let filters = trigger(SHOP).spec.filters;
        let table = Triggers::new(
            manifest
                .functions
                .iter()
                .flat_map(|f| f.events.iter().map(move |t| (t.clone(), f.name.clone()))),
        )
        .unwrap();
        let types = [
            "com.example.order.created",
            "com.example.order.created.v2",
            "com.example.refund.issued",
            "com.example.refund.",
            "com.example",
            "com.other.order.created",
            "",
        ];
        let sources = [
            "/shop",
            "/shop/",
            "/shop/eu",
            "/shop/admin",
            "/shop/adminx",
            "/x",
        ];
        let subjects = [None, Some("eu-1"), Some("eu"), Some("us-1")];
        let (mut taken, mut refused) = (0, 0);
        for ty in types {
            for source in sources {
                for subject in subjects {
                    let mut event = BTreeMap::from([("type", ty), ("source", source)]);
                    if let Some(subject) = subject {
                        event.insert("subject", subject);
                    }
                    let host = table.find(ty, source, subject).is_some();
                    let broker = filters.iter().all(|f| passes(f, &event));
                    assert_eq!(broker, host, "{event:?}: broker {broker}, host {host}");
                    if host { taken += 1 } else { refused += 1 }
                }
            }
        }
        // The events above exercise both answers.
        assert!(
            taken > 20 && refused > 20,
            "{taken} taken, {refused} refused"
        );
    }

    #[test]
    fn one_trigger_is_its_conditions_alone_and_none_take_every_event() {
        let one = |events: &str| {
            trigger(&format!(
                "[[function]]\nname = \"a\"\ncomponent = \"a.wasm\"\nevents = [{events}]\n"
            ))
            .spec
            .filters
        };
        let exact = |a, v: &str| Expression::Exact(BTreeMap::from([(a, v.to_owned())]));
        let prefix = |a, v: &str| Expression::Prefix(BTreeMap::from([(a, v.to_owned())]));
        assert_eq!(one("{ type = \"t\" }"), [exact("type", "t")]);
        assert_eq!(
            one("{ type = \"t.*\", subject = \"s\" }"),
            [Expression::All(vec![
                prefix("type", "t."),
                exact("subject", "s")
            ])]
        );
        assert_eq!(one("{ type = \"*\" }"), []);
        assert_eq!(one("{ type = \"t\" }, { source = \"*\" }"), []);
    }

    #[test]
    fn no_events_no_trigger_unless_all_are_asked_for() {
        let routes =
            manifest("[[function]]\nname = \"a\"\ncomponent = \"a.wasm\"\nroutes = [\"/a\"]\n");
        let make = |events| Trigger::new(&routes, &eventing("ops", events)).unwrap();
        assert!(make(Events::OfTheManifest).is_none());
        let all = make(Events::All).unwrap();
        assert!(all.spec.filters.is_empty());
        assert_eq!(all.spec.broker, "ops");
        assert!(trigger(SHOP).spec.filters.len() == 1);
        let every = Trigger::new(&manifest(SHOP), &eventing("default", Events::All));
        assert!(every.unwrap().unwrap().spec.filters.is_empty());
    }

    #[test]
    fn a_condition_kubernetes_would_misread_is_refused_naming_its_function() {
        let on = manifest(
            "[[function]]\nname = \"lights\"\ncomponent = \"l.wasm\"\nevents = [{ type = \"on\" }]\n",
        );
        let why = Trigger::new(&on, &options(None)).unwrap_err();
        assert!(why.contains("`lights`") && why.contains("boolean"), "{why}");
    }
}
