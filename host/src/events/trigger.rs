//! Which function an event goes to.
//!
//! A function's trigger names conditions on three attributes of an event,
//! `type`, `source` and `subject`: each exact (`"com.example.order.created"`),
//! a prefix (`"com.example.order.*"`), or absent (any value, also `"*"`).
//! An event goes to one function: the one whose matching trigger is the
//! most specific. `type` decides first, then `source`, then `subject`; for
//! each, an exact condition beats a prefix, a longer prefix a shorter one,
//! and any prefix no condition. Two triggers that match the same event
//! with the same specificity are then the same trigger, so that order is
//! total; the same trigger in two functions is refused when the table is
//! built, as a route taken twice is.
//!
//! Lookups go through the exact `type` first (a hash map), then the
//! triggers without one, so a host with thousands of triggers finds an
//! event's in time proportional to the triggers sharing its type.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;

use serde::Deserialize;

/// The character that makes a condition a prefix.
const WILDCARD: char = '*';

/// A condition on one attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Filter {
    /// Any value, or none.
    Any,
    /// Exactly this value.
    Exact(String),
    /// A value starting with this (not empty).
    Prefix(String),
}

impl Filter {
    /// Parses `text`: `*` is any value, `abc*` a prefix, anything else
    /// exact.
    fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err(
                "an empty condition matches nothing; leave the attribute out, or write \"*\""
                    .to_owned(),
            );
        }
        match text.strip_suffix(WILDCARD) {
            Some(prefix) if prefix.contains(WILDCARD) => Err(format!(
                "`{text}`: `*` may only end a condition, as a prefix"
            )),
            Some("") => Ok(Self::Any),
            Some(prefix) => Ok(Self::Prefix(prefix.to_owned())),
            None if text.contains(WILDCARD) => Err(format!(
                "`{text}`: `*` may only end a condition, as a prefix"
            )),
            None => Ok(Self::Exact(text.to_owned())),
        }
    }

    /// Whether `value` (`None` when the event lacks the attribute) meets it.
    pub fn matches(&self, value: Option<&str>) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(exact) => value == Some(exact.as_str()),
            Self::Prefix(prefix) => value.is_some_and(|v| v.starts_with(prefix.as_str())),
        }
    }

    /// How specific it is: higher wins.
    fn rank(&self) -> (u8, usize) {
        match self {
            Self::Any => (0, 0),
            Self::Prefix(prefix) => (1, prefix.len()),
            Self::Exact(_) => (2, 0),
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => write!(f, "{WILDCARD}"),
            Self::Exact(exact) => f.write_str(exact),
            Self::Prefix(prefix) => write!(f, "{prefix}{WILDCARD}"),
        }
    }
}

/// One trigger: the events a function takes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "RawTrigger")]
pub struct Trigger {
    /// The condition on `type`.
    pub ty: Filter,
    /// The condition on `source`.
    pub source: Filter,
    /// The condition on `subject`.
    pub subject: Filter,
}

/// A trigger as the manifest writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    #[serde(rename = "type")]
    ty: Option<String>,
    source: Option<String>,
    subject: Option<String>,
}

impl TryFrom<RawTrigger> for Trigger {
    type Error = String;

    fn try_from(raw: RawTrigger) -> Result<Self, String> {
        if raw.ty.is_none() && raw.source.is_none() && raw.subject.is_none() {
            return Err(
                "field `events`: a trigger needs `type`, `source` or `subject` \
                 (write `type = \"*\"` to take every event)"
                    .to_owned(),
            );
        }
        let filter = |name: &str, text: Option<String>| match text {
            None => Ok(Filter::Any),
            Some(text) => Filter::parse(&text)
                .map_err(|why| format!("field `events`: condition on `{name}`: {why}")),
        };
        Ok(Self {
            ty: filter("type", raw.ty)?,
            source: filter("source", raw.source)?,
            subject: filter("subject", raw.subject)?,
        })
    }
}

impl Trigger {
    /// Whether an event with these attributes meets every condition.
    pub fn matches(&self, ty: &str, source: &str, subject: Option<&str>) -> bool {
        self.ty.matches(Some(ty))
            && self.source.matches(Some(source))
            && self.subject.matches(subject)
    }

    /// Whether it takes every event.
    fn is_catch_all(&self) -> bool {
        self.ty == Filter::Any && self.source == Filter::Any && self.subject == Filter::Any
    }

    /// How specific it is: higher wins (see the module's doc).
    fn rank(&self) -> [(u8, usize); 3] {
        [self.ty.rank(), self.source.rank(), self.subject.rank()]
    }
}

/// As the manifest writes it: the conditions given, each as text.
impl serde::Serialize for Trigger {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let given = [
            ("type", &self.ty),
            ("source", &self.source),
            ("subject", &self.subject),
        ];
        let mut map = serializer.serialize_map(None)?;
        for (name, filter) in given {
            if *filter != Filter::Any || (name == "type" && self.is_catch_all()) {
                map.serialize_entry(name, &filter.to_string())?;
            }
        }
        map.end()
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "type = \"{}\"", self.ty)?;
        for (name, filter) in [("source", &self.source), ("subject", &self.subject)] {
            if *filter != Filter::Any {
                write!(f, ", {name} = \"{filter}\"")?;
            }
        }
        Ok(())
    }
}

/// The same trigger declared twice: by `first` and by `second` (the same
/// function if it lists it twice).
#[derive(Debug)]
pub struct TriggerConflict<F> {
    /// The trigger both declare.
    pub trigger: Trigger,
    /// The function that declared it first.
    pub first: F,
    /// The function that declared it again.
    pub second: F,
}

/// Every trigger of a table, with the function each leads to.
pub struct Triggers<F> {
    by_type: HashMap<String, Vec<(Trigger, F)>>,
    others: Vec<(Trigger, F)>,
}

impl<F: Clone> Triggers<F> {
    /// The index of `triggers`; refused if one is declared twice.
    pub fn new(
        triggers: impl IntoIterator<Item = (Trigger, F)>,
    ) -> Result<Self, TriggerConflict<F>> {
        let mut seen: HashMap<Trigger, F> = HashMap::new();
        let mut index = Self {
            by_type: HashMap::new(),
            others: Vec::new(),
        };
        for (trigger, function) in triggers {
            match seen.entry(trigger.clone()) {
                Entry::Occupied(first) => {
                    return Err(TriggerConflict {
                        trigger,
                        first: first.get().clone(),
                        second: function,
                    });
                }
                Entry::Vacant(place) => {
                    place.insert(function.clone());
                }
            }
            match &trigger.ty {
                Filter::Exact(ty) => index
                    .by_type
                    .entry(ty.clone())
                    .or_default()
                    .push((trigger, function)),
                _ => index.others.push((trigger, function)),
            }
        }
        Ok(index)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_type.is_empty() && self.others.is_empty()
    }

    /// The most specific trigger an event with these attributes meets, and
    /// its function.
    pub fn find(&self, ty: &str, source: &str, subject: Option<&str>) -> Option<(&Trigger, &F)> {
        // An exact type beats every other condition on type.
        self.by_type
            .get(ty)
            .and_then(|same_type| best(same_type, ty, source, subject))
            .or_else(|| best(&self.others, ty, source, subject))
    }
}

/// The most specific of `candidates` that an event meets.
fn best<'a, F>(
    candidates: &'a [(Trigger, F)],
    ty: &str,
    source: &str,
    subject: Option<&str>,
) -> Option<(&'a Trigger, &'a F)> {
    candidates
        .iter()
        .filter(|(trigger, _)| trigger.matches(ty, source, subject))
        .max_by_key(|(trigger, _)| trigger.rank())
        .map(|(trigger, function)| (trigger, function))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(text: &str) -> Result<Trigger, String> {
        #[derive(Deserialize)]
        struct Wrap {
            t: Trigger,
        }
        toml::from_str::<Wrap>(&format!("t = {text}"))
            .map(|w| w.t)
            .map_err(|e| e.message().to_owned())
    }

    #[test]
    fn conditions_are_exact_prefix_or_any_and_bad_ones_are_refused() {
        let t = trigger(r#"{ type = "com.example.order.*", source = "/shop" }"#).unwrap();
        assert_eq!(t.ty, Filter::Prefix("com.example.order.".into()));
        assert_eq!(t.source, Filter::Exact("/shop".into()));
        assert_eq!(t.subject, Filter::Any);
        assert!(t.matches("com.example.order.created", "/shop", None));
        assert!(!t.matches("com.example.order.created", "/shop2", None));
        assert!(!t.matches("com.example.orders", "/shop", None));
        assert_eq!(
            t.to_string(),
            r#"type = "com.example.order.*", source = "/shop""#
        );
        assert_eq!(trigger(r#"{ type = "*" }"#).unwrap().ty, Filter::Any);
        assert!(
            trigger(r#"{ subject = "a*" }"#)
                .unwrap()
                .matches("x", "y", Some("ab"))
        );
        assert!(
            !trigger(r#"{ subject = "a*" }"#)
                .unwrap()
                .matches("x", "y", None)
        );

        for (bad, why) in [
            ("{}", "needs `type`, `source` or `subject`"),
            (
                r#"{ type = "" }"#,
                "condition on `type`: an empty condition",
            ),
            (r#"{ type = "a*b" }"#, "`*` may only end a condition"),
            (r#"{ type = "a**" }"#, "`*` may only end a condition"),
            (r#"{ kind = "a" }"#, "unknown field `kind`"),
        ] {
            let error = trigger(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn the_most_specific_trigger_wins_type_first_then_source_then_subject() {
        let triggers = Triggers::new(
            [
                (r#"{ type = "*" }"#, "catch-all"),
                (r#"{ type = "com.example.*" }"#, "example"),
                (r#"{ type = "com.example.order.*" }"#, "orders"),
                (r#"{ type = "com.example.order.created" }"#, "created"),
                (
                    r#"{ type = "com.example.order.created", source = "/eu/*" }"#,
                    "created-eu",
                ),
                (r#"{ source = "/audit" }"#, "audit"),
                (
                    r#"{ type = "com.example.order.created", subject = "vip" }"#,
                    "vip",
                ),
            ]
            .map(|(t, f)| (trigger(t).unwrap(), f)),
        )
        .unwrap();
        let to = |ty: &str, source: &str, subject: Option<&str>| {
            triggers.find(ty, source, subject).map(|(_, f)| *f)
        };
        assert_eq!(
            to("com.example.order.created", "/us", None),
            Some("created")
        );
        assert_eq!(
            to("com.example.order.created", "/eu/fr", Some("vip")),
            Some("created-eu"),
            "source decides before subject"
        );
        assert_eq!(
            to("com.example.order.created", "/us", Some("vip")),
            Some("vip")
        );
        assert_eq!(to("com.example.order.paid", "/us", None), Some("orders"));
        assert_eq!(to("com.example.user.created", "/us", None), Some("example"));
        // An exact source does not beat a prefix on type: type decides first.
        assert_eq!(
            to("com.example.user.created", "/audit", None),
            Some("example")
        );
        assert_eq!(to("org.other", "/audit", None), Some("audit"));
        assert_eq!(to("org.other", "/x", None), Some("catch-all"));

        let none = Triggers::new([(trigger(r#"{ type = "a" }"#).unwrap(), "a")]).unwrap();
        assert!(none.find("b", "s", None).is_none());
        assert!(!none.is_empty());
    }

    #[test]
    fn the_same_trigger_twice_is_a_conflict_naming_both_functions() {
        let conflict = Triggers::new([
            (trigger(r#"{ type = "a", source = "s" }"#).unwrap(), "one"),
            (trigger(r#"{ type = "b" }"#).unwrap(), "two"),
            (trigger(r#"{ source = "s", type = "a" }"#).unwrap(), "three"),
        ])
        .err()
        .unwrap();
        assert_eq!((conflict.first, conflict.second), ("one", "three"));
        assert_eq!(conflict.trigger.to_string(), r#"type = "a", source = "s""#);
    }
}
