//! One version of the registry: every function, in order, the routes to
//! them, and the event triggers that lead to them.
//!
//! A table never changes once built. A change (functions put in, replaced
//! or taken out) builds a new table beside the current one and checks it;
//! the registry then swaps it in atomically, or keeps the old one if the
//! check failed. Requests load the current table once and keep what they
//! found, so a swap never pulls a function from under a request.
//!
//! The new table shares what did not change with the current one: its maps
//! are persistent B-trees ([`imbl::OrdMap`]), so a change costs the
//! functions it touches (and the logarithm of the table's size), not the
//! whole table. With 100,000 functions, a deploy of one does not copy the
//! other 99,999.

use std::collections::BTreeMap;
use std::sync::Arc;

use imbl::OrdMap;

use crate::events::{DEFAULT_EVENTS_PATH, Trigger, TriggerConflict, Triggers};
use crate::manifest::FunctionName;
use crate::router::{RouteConflict, RouteMatch, RoutePattern, Router};

/// What a table holds: anything with a name, routes and event triggers.
pub trait Routed {
    /// Its unique name.
    fn name(&self) -> &FunctionName;
    /// Where it is served.
    fn routes(&self) -> &[RoutePattern];
    /// The events it takes.
    fn events(&self) -> &[Trigger] {
        &[]
    }
}

/// One change to a table.
pub enum Change<F> {
    /// Adds a function, or replaces the one of the same name (keeping its
    /// place in the order).
    Put(Arc<F>),
    /// Takes out the function of this name.
    Remove(FunctionName),
}

/// Why a change was refused; the table is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// Two functions claim the same route.
    #[error("route `{route}` of function `{second}` is already taken by function `{first}`")]
    RouteConflict {
        /// The route both claim.
        route: RoutePattern,
        /// The function that has it.
        first: FunctionName,
        /// The function that claims it too.
        second: FunctionName,
    },
    /// One function lists the same route twice.
    #[error("function `{function}` lists route `{route}` twice")]
    RouteTwice {
        /// The route.
        route: RoutePattern,
        /// The function.
        function: FunctionName,
    },
    /// Two functions declare the same event trigger.
    #[error(
        "event trigger {{ {trigger} }} of function `{second}` is already taken by function `{first}`"
    )]
    TriggerConflict {
        /// The trigger both declare.
        trigger: Box<Trigger>,
        /// The function that has it.
        first: FunctionName,
        /// The function that declares it too.
        second: FunctionName,
    },
    /// One function lists the same trigger twice.
    #[error("function `{function}` lists event trigger {{ {trigger} }} twice")]
    TriggerTwice {
        /// The trigger.
        trigger: Box<Trigger>,
        /// The function.
        function: FunctionName,
    },
    /// A function's exact route is the events path, which events take
    /// while any function has triggers.
    #[error(
        "route `{path}` of function `{function}` is the events path, where events are \
         delivered (--events-path); choose another route or another events path"
    )]
    EventsPathTaken {
        /// The events path.
        path: String,
        /// The function routed there.
        function: FunctionName,
    },
    /// A removal names no function of the table.
    #[error("there is no function `{0}`")]
    NoSuchFunction(FunctionName),
}

/// An immutable version of the registry.
pub struct Table<F> {
    generation: u64,
    /// Every function, by its place in the order they were added. A place
    /// is never given twice, so the order stays that of the additions.
    order: OrdMap<u64, Arc<F>>,
    /// Each function's place, by name.
    places: OrdMap<FunctionName, u64>,
    /// The place the next function added takes.
    next_place: u64,
    router: Router<Arc<F>>,
    /// The functions that take events, by place: the triggers are rebuilt
    /// from them when one of them changes (few functions take events).
    with_events: OrdMap<u64, Arc<F>>,
    triggers: Arc<Triggers<Arc<F>>>,
    events_path: Arc<str>,
}

impl<F: Routed> Table<F> {
    /// The table before anything is registered, with events delivered at
    /// the default path.
    pub fn empty() -> Self {
        Self::with_events_path(DEFAULT_EVENTS_PATH)
    }

    /// The table before anything is registered, with events delivered at
    /// `events_path`.
    pub fn with_events_path(events_path: &str) -> Self {
        Self {
            generation: 0,
            order: OrdMap::new(),
            places: OrdMap::new(),
            next_place: 0,
            router: Router::default(),
            with_events: OrdMap::new(),
            triggers: Arc::new(Triggers::new([]).unwrap_or_else(|_| unreachable!("no triggers"))),
            events_path: events_path.into(),
        }
    }

    /// The table with `changes` applied, numbered one more than this one;
    /// refused, with the reason, if the result is not a valid table.
    ///
    /// Every function replaced or removed is taken out first, then the new
    /// ones put in, in the table's order: a route that moves from one
    /// function to another in one change is no conflict.
    pub fn change(&self, changes: impl IntoIterator<Item = Change<F>>) -> Result<Self, TableError> {
        let mut next = Self {
            generation: self.generation + 1,
            order: self.order.clone(),
            places: self.places.clone(),
            next_place: self.next_place,
            router: self.router.clone(),
            with_events: self.with_events.clone(),
            triggers: self.triggers.clone(),
            events_path: self.events_path.clone(),
        };
        let mut events_changed = false;
        let mut put = BTreeMap::new();
        for change in changes {
            match change {
                Change::Put(function) => {
                    let place = match next.places.get(function.name()) {
                        Some(&place) => {
                            events_changed |= next.take_out(place);
                            place
                        }
                        None => {
                            let place = next.next_place;
                            next.next_place += 1;
                            next.places.insert(function.name().clone(), place);
                            place
                        }
                    };
                    put.insert(place, function);
                }
                Change::Remove(name) => {
                    let place = next
                        .places
                        .remove(&name)
                        .ok_or(TableError::NoSuchFunction(name))?;
                    put.remove(&place);
                    events_changed |= next.take_out(place);
                }
            }
        }
        for (place, function) in put {
            for route in function.routes() {
                next.router
                    .insert(route.clone(), function.clone())
                    .map_err(route_refused)?;
            }
            if !function.events().is_empty() {
                next.with_events.insert(place, function.clone());
                events_changed = true;
            }
            next.order.insert(place, function);
        }
        if events_changed {
            let triggers = next.with_events.values().flat_map(|f| {
                f.events()
                    .iter()
                    .map(move |trigger| (trigger.clone(), f.clone()))
            });
            next.triggers = Arc::new(Triggers::new(triggers).map_err(trigger_refused)?);
        }
        if !next.triggers.is_empty()
            && let Some((RouteMatch::Exact(_), function)) = next.router.find(&next.events_path)
        {
            return Err(TableError::EventsPathTaken {
                path: next.events_path.to_string(),
                function: function.name().clone(),
            });
        }
        Ok(next)
    }

    /// Takes the function at `place` out of the order, the routes and the
    /// triggers (its name stays); whether it took events.
    fn take_out(&mut self, place: u64) -> bool {
        let Some(function) = self.order.remove(&place) else {
            return false;
        };
        for route in function.routes() {
            self.router.remove(route);
        }
        self.with_events.remove(&place).is_some()
    }

    /// How many changes led to this table.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The function serving `path`, if any, and the route that matched.
    pub fn route<'p>(&self, path: &'p str) -> Option<(RouteMatch<'p>, &Arc<F>)> {
        self.router.find(path)
    }

    /// Where events are delivered, if any function takes events.
    pub fn events_path(&self) -> Option<&str> {
        (!self.triggers.is_empty()).then_some(&*self.events_path)
    }

    /// The function an event with these attributes goes to, and the
    /// trigger that chose it.
    pub fn event(
        &self,
        ty: &str,
        source: &str,
        subject: Option<&str>,
    ) -> Option<(&Trigger, &Arc<F>)> {
        self.triggers.find(ty, source, subject)
    }

    /// Every function, in the order they were added.
    pub fn functions(&self) -> impl Iterator<Item = &Arc<F>> {
        self.order.values()
    }

    /// The first function at `place` or after it in the order they were
    /// added, with its place: a walk that holds no borrow between steps.
    pub fn function_from(&self, place: u64) -> Option<(u64, &Arc<F>)> {
        self.order
            .range(place..)
            .next()
            .map(|(place, function)| (*place, function))
    }

    /// How many functions there are.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The function called `name`.
    pub fn get(&self, name: &FunctionName) -> Option<&Arc<F>> {
        self.places
            .get(name)
            .and_then(|place| self.order.get(place))
    }
}

/// The refusal of a route that is taken.
fn route_refused<F: Routed>(conflict: RouteConflict<Arc<F>>) -> TableError {
    let (first, second) = (conflict.first.name(), conflict.second.name());
    if first == second {
        TableError::RouteTwice {
            route: conflict.pattern,
            function: first.clone(),
        }
    } else {
        TableError::RouteConflict {
            route: conflict.pattern,
            first: first.clone(),
            second: second.clone(),
        }
    }
}

/// The refusal of a trigger that is taken.
fn trigger_refused<F: Routed>(
    TriggerConflict {
        trigger,
        first,
        second,
    }: TriggerConflict<Arc<F>>,
) -> TableError {
    if first.name() == second.name() {
        TableError::TriggerTwice {
            trigger: Box::new(trigger),
            function: first.name().clone(),
        }
    } else {
        TableError::TriggerConflict {
            trigger: Box::new(trigger),
            first: first.name().clone(),
            second: second.name().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Filter;

    #[derive(Debug, PartialEq)]
    struct Fake {
        name: FunctionName,
        routes: Vec<RoutePattern>,
        events: Vec<Trigger>,
        version: u32,
    }

    impl Routed for Fake {
        fn name(&self) -> &FunctionName {
            &self.name
        }

        fn routes(&self) -> &[RoutePattern] {
            &self.routes
        }

        fn events(&self) -> &[Trigger] {
            &self.events
        }
    }

    fn fake(name: &str, routes: &[&str], version: u32) -> Change<Fake> {
        with_events(name, routes, &[], version)
    }

    /// A function taking events of each type in `types`.
    fn with_events(name: &str, routes: &[&str], types: &[&str], version: u32) -> Change<Fake> {
        Change::Put(Arc::new(Fake {
            name: FunctionName::try_from(name.to_owned()).unwrap(),
            routes: routes
                .iter()
                .map(|r| RoutePattern::try_from((*r).to_owned()).unwrap())
                .collect(),
            events: types
                .iter()
                .map(|ty| Trigger {
                    ty: match ty.strip_suffix('*') {
                        Some("") => Filter::Any,
                        Some(prefix) => Filter::Prefix(prefix.to_owned()),
                        None => Filter::Exact((*ty).to_owned()),
                    },
                    source: Filter::Any,
                    subject: Filter::Any,
                })
                .collect(),
            version,
        }))
    }

    fn name(name: &str) -> FunctionName {
        FunctionName::try_from(name.to_owned()).unwrap()
    }

    /// The name and version serving `path`.
    fn served(table: &Table<Fake>, path: &str) -> Option<(String, u32)> {
        table
            .route(path)
            .map(|(_, f)| (f.name.to_string(), f.version))
    }

    fn names(table: &Table<Fake>) -> Vec<&str> {
        table.functions().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn functions_are_added_replaced_and_removed_as_a_whole_new_table() {
        let empty = Table::empty();
        let one = empty
            .change([fake("a", &["/a"], 1), fake("b", &["/b/..."], 1)])
            .unwrap();
        assert_eq!((empty.generation(), one.generation()), (0, 1));
        assert_eq!(served(&one, "/b/x"), Some(("b".into(), 1)));

        // Replaced in place: same order, new version, new routes.
        let two = one.change([fake("a", &["/a", "/alpha"], 2)]).unwrap();
        assert_eq!(names(&two), ["a", "b"]);
        assert_eq!(served(&two, "/alpha"), Some(("a".into(), 2)));
        // The old table still serves what it served.
        assert_eq!(served(&one, "/alpha"), None);
        assert_eq!(served(&one, "/a"), Some(("a".into(), 1)));

        // Removed: its routes go with it; a route moves to another function.
        let three = two
            .change([Change::Remove(name("a")), fake("b", &["/b/...", "/a"], 2)])
            .unwrap();
        assert_eq!(names(&three), ["b"]);
        assert_eq!(served(&three, "/a"), Some(("b".into(), 2)));
        assert_eq!(served(&three, "/alpha"), None);
        assert!(three.get(&name("a")).is_none());
        assert_eq!(three.get(&name("b")).unwrap().version, 2);

        // Indexes stay right after a removal in the middle.
        let four = three
            .change([fake("c", &["/c"], 1), fake("d", &["/d"], 1)])
            .unwrap()
            .change([Change::Remove(name("c"))])
            .unwrap();
        assert_eq!(names(&four), ["b", "d"]);
        assert_eq!(four.get(&name("d")).unwrap().name.as_str(), "d");
    }

    #[test]
    fn a_refused_change_names_the_reason_and_leaves_the_table_as_it_was() {
        let table = Table::empty()
            .change([fake("a", &["/a"], 1), fake("b", &["/b"], 1)])
            .unwrap();
        let conflict = table.change([fake("c", &["/c", "/a"], 1)]).err().unwrap();
        assert_eq!(
            conflict.to_string(),
            "route `/a` of function `c` is already taken by function `a`"
        );
        let twice = table.change([fake("a", &["/x", "/x"], 2)]).err().unwrap();
        assert_eq!(twice.to_string(), "function `a` lists route `/x` twice");
        let missing = table.change([Change::Remove(name("zz"))]).err().unwrap();
        assert_eq!(missing, TableError::NoSuchFunction(name("zz")));
        // Nothing changed.
        assert_eq!(table.generation(), 1);
        assert_eq!(names(&table), ["a", "b"]);
        assert_eq!(served(&table, "/a"), Some(("a".into(), 1)));
        assert_eq!(served(&table, "/c"), None);
    }

    #[test]
    fn a_route_swapped_between_two_functions_in_one_change_is_no_conflict() {
        let table = Table::empty()
            .change([fake("a", &["/one"], 1), fake("b", &["/two"], 1)])
            .unwrap()
            .change([fake("a", &["/two"], 2), fake("b", &["/one"], 2)])
            .unwrap();
        assert_eq!(served(&table, "/one"), Some(("b".into(), 2)));
        assert_eq!(served(&table, "/two"), Some(("a".into(), 2)));
    }

    #[test]
    fn events_go_by_trigger_and_take_the_events_path_only_while_a_function_has_triggers() {
        let routes_only = Table::with_events_path("/events")
            .change([fake("site", &["/events", "/..."], 1)])
            .unwrap();
        assert_eq!(
            routes_only.events_path(),
            None,
            "no triggers, no events path"
        );

        // Once a function has triggers, an exact route at the events path
        // is refused; a wildcard above it is not.
        let refused = routes_only
            .change([with_events("orders", &[], &["order.created"], 1)])
            .err()
            .unwrap();
        assert_eq!(
            refused,
            TableError::EventsPathTaken {
                path: "/events".into(),
                function: name("site"),
            }
        );
        let table = routes_only
            .change([
                fake("site", &["/..."], 2),
                with_events("orders", &[], &["order.created"], 1),
                with_events("audit", &["/audit"], &["*"], 1),
            ])
            .unwrap();
        assert_eq!(table.events_path(), Some("/events"));
        let to = |ty: &str| table.event(ty, "/s", None).map(|(_, f)| f.name.to_string());
        assert_eq!(to("order.created").as_deref(), Some("orders"));
        assert_eq!(to("user.deleted").as_deref(), Some("audit"));
        assert_eq!(served(&table, "/events/x"), Some(("site".into(), 2)));

        // The same trigger in two functions, or twice in one.
        let taken = table
            .change([with_events("other", &[], &["order.created"], 1)])
            .err()
            .unwrap();
        assert_eq!(
            taken.to_string(),
            "event trigger { type = \"order.created\" } of function `other` is already \
             taken by function `orders`"
        );
        let twice = table
            .change([with_events("orders", &[], &["a", "a"], 2)])
            .err()
            .unwrap();
        assert!(matches!(twice, TableError::TriggerTwice { .. }), "{twice}");
        // Taking the triggers away frees the path.
        let after = table
            .change([
                Change::Remove(name("orders")),
                Change::Remove(name("audit")),
            ])
            .unwrap();
        assert_eq!(after.events_path(), None);
    }
}
