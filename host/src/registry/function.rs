//! A function as the router finds it: its routes, and the revisions that
//! serve it, one chosen per request.
//!
//! A function declared in the manifest has one revision. An uploaded one
//! has as many as its traffic names: a request carrying a pinned header
//! value goes to that revision, any other to a revision drawn by the split's
//! weights. Only revisions that serve requests are here (compiled, and
//! warmed on demand); the others exist only in the deployed state.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::entry::FunctionEntry;
use super::table::Routed;
use crate::deploy::state::RevisionName;
use crate::events::Trigger;
use crate::manifest::FunctionName;
use crate::router::RoutePattern;

/// Where a function comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The manifest `host run` serves.
    Manifest,
    /// Uploaded through the admin API.
    Deployed,
}

/// A routed function.
pub struct Function {
    name: FunctionName,
    /// The index of the revision whose routes and events are the
    /// function's.
    routed_by: usize,
    source: Source,
    revisions: Vec<Arc<FunctionEntry>>,
    choice: Choice,
}

/// How a request's revision is chosen.
enum Choice {
    /// There is one.
    One,
    /// By header, then by weight.
    Split {
        /// A header value that pins a request to the revision at an index.
        pins: Vec<(HeaderName, HeaderValue, usize)>,
        /// Cumulative percent and the revision's index, in order.
        weights: Vec<(u8, usize)>,
    },
}

/// A revision's share of a function's requests, and the header rules that
/// pin requests to it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Share {
    /// Percent of the requests not pinned.
    pub percent: u8,
    /// Header name and value pairs that send a request here.
    pub pins: Vec<(HeaderName, HeaderValue)>,
}

impl Function {
    /// A function served by one revision.
    pub fn single(name: FunctionName, source: Source, revision: Arc<FunctionEntry>) -> Self {
        Self {
            routed_by: 0,
            name,
            source,
            revisions: vec![revision],
            choice: Choice::One,
        }
    }

    /// A function served by `revisions`, each with its share. Its routes
    /// and events are those of the revision with the largest share (the
    /// newest among equals): rolling back moves them back too.
    pub fn split(
        name: FunctionName,
        source: Source,
        revisions: Vec<(Arc<FunctionEntry>, Share)>,
    ) -> Self {
        let routed_by = revisions
            .iter()
            .enumerate()
            .max_by_key(|(index, (_, share))| (share.percent, *index))
            .map_or(0, |(index, _)| index);
        let shares: Vec<&Share> = revisions.iter().map(|(_, share)| share).collect();
        let choice = Choice::new(&shares);
        Self {
            name,
            routed_by,
            source,
            revisions: revisions.into_iter().map(|(entry, _)| entry).collect(),
            choice,
        }
    }

    /// Where it comes from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// The revisions that serve it.
    pub fn revisions(&self) -> &[Arc<FunctionEntry>] {
        &self.revisions
    }

    /// The revision that serves most of its requests.
    pub fn primary(&self) -> &Arc<FunctionEntry> {
        match &self.choice {
            Choice::One => &self.revisions[0],
            Choice::Split { weights, .. } => {
                let mut previous = 0;
                let mut best = (0, 0);
                for &(cumulative, index) in weights {
                    let share = cumulative - previous;
                    previous = cumulative;
                    if share >= best.0 {
                        best = (share, index);
                    }
                }
                &self.revisions[best.1]
            }
        }
    }

    /// The revision called `name`, if it serves.
    pub fn revision(&self, name: &RevisionName) -> Option<&Arc<FunctionEntry>> {
        self.revisions
            .iter()
            .find(|entry| entry.revision() == Some(name))
    }

    /// The revision that serves a request with `headers`.
    pub fn choose(&self, headers: &HeaderMap) -> &Arc<FunctionEntry> {
        let index = match &self.choice {
            Choice::One => 0,
            split => split.pick(headers, fastrand::u8(0..100)),
        };
        &self.revisions[index]
    }

    /// Whether it would serve exactly as `other` does.
    pub fn same_as(&self, other: &Function) -> bool {
        self.routes() == other.routes()
            && self.events() == other.events()
            && self.source == other.source
            && self.revisions.len() == other.revisions.len()
            && self
                .revisions
                .iter()
                .zip(&other.revisions)
                .all(|(a, b)| Arc::ptr_eq(a, b))
            && self.choice == other.choice
    }
}

impl Choice {
    /// The choice between revisions with `shares`, by index.
    fn new(shares: &[&Share]) -> Self {
        if shares.len() == 1 {
            return Self::One;
        }
        let mut pins = Vec::new();
        let mut weights = Vec::new();
        let mut total = 0u8;
        for (index, share) in shares.iter().enumerate() {
            for (header, value) in &share.pins {
                pins.push((header.clone(), value.clone(), index));
            }
            if share.percent > 0 {
                total = total.saturating_add(share.percent);
                weights.push((total, index));
            }
        }
        Self::Split { pins, weights }
    }

    /// The index of the revision for a request with `headers`, given a
    /// `draw` from 0 to 99.
    fn pick(&self, headers: &HeaderMap, draw: u8) -> usize {
        let Self::Split { pins, weights } = self else {
            return 0;
        };
        for (header, value, index) in pins {
            if headers.get_all(header).iter().any(|v| v == value) {
                return *index;
            }
        }
        weights
            .iter()
            .find(|(cumulative, _)| draw < *cumulative)
            .or(weights.last())
            .map_or(0, |(_, index)| *index)
    }
}

impl PartialEq for Choice {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::One, Self::One) => true,
            (
                Self::Split { pins, weights },
                Self::Split {
                    pins: other_pins,
                    weights: other_weights,
                },
            ) => pins == other_pins && weights == other_weights,
            _ => false,
        }
    }
}

impl Routed for Function {
    fn name(&self) -> &FunctionName {
        &self.name
    }

    fn routes(&self) -> &[RoutePattern] {
        self.revisions
            .get(self.routed_by)
            .map_or(&[], |entry| entry.def().routes())
    }

    fn events(&self) -> &[Trigger] {
        self.revisions
            .get(self.routed_by)
            .map_or(&[], |entry| entry.def().events())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(percent: u8, pins: &[(&'static str, &'static str)]) -> Share {
        Share {
            percent,
            pins: pins
                .iter()
                .map(|(h, v)| (HeaderName::from_static(h), HeaderValue::from_static(v)))
                .collect(),
        }
    }

    #[test]
    fn a_split_sends_each_draw_to_its_share_and_pins_win() {
        let (a, b, c) = (
            share(90, &[]),
            share(10, &[]),
            share(0, &[("x-canary", "true")]),
        );
        let choice = Choice::new(&[&a, &b, &c]);
        let none = HeaderMap::new();
        let picks: Vec<usize> = (0..100).map(|draw| choice.pick(&none, draw)).collect();
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 90);
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 10);
        assert!(!picks.contains(&2), "a pinned-only revision gets no share");

        let mut canary = HeaderMap::new();
        canary.insert("x-canary", HeaderValue::from_static("true"));
        assert!((0..100).all(|draw| choice.pick(&canary, draw) == 2));
        canary.insert("x-canary", HeaderValue::from_static("false"));
        assert!(choice.pick(&canary, 95) == 1);

        assert!(matches!(Choice::new(&[&a]), Choice::One));
    }
}
