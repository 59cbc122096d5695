//! A name-to-id registry of currencies and pairs, for the edges.
//!
//! The API and the feed both turn `"BTC_SEK"` into a [`PairId`] and ticks into decimal
//! strings. Each keeps its own registry, built from the engine after recovery and kept up to
//! date from the `AddCurrency`/`AddPair`/`SetPairStatus` commands it sees in processed batches.

use crate::command::Command;
use crate::engine::Engine;
use crate::event::Event;
use crate::ids::{CurrencyId, PairId};
use crate::pipeline::Processed;
use crate::spec::{CurrencySpec, PairScale, PairSpec, PairStatus};

/// A currency with its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrencyEntry {
    pub id: CurrencyId,
    pub spec: CurrencySpec,
}

/// A pair with its id, symbol and derived scales.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairEntry {
    pub id: PairId,
    /// `BASE_QUOTE`.
    pub symbol: String,
    pub spec: PairSpec,
    pub scale: PairScale,
    pub base_decimals: u8,
    pub quote_decimals: u8,
}

/// Currencies and pairs by id and by name.
#[derive(Clone, Debug, Default)]
pub struct Markets {
    currencies: Vec<CurrencyEntry>,
    pairs: Vec<PairEntry>,
}

impl Markets {
    /// The registry as the engine stands.
    pub fn from_engine(engine: &Engine) -> Markets {
        let mut m = Markets::default();
        for (id, spec) in engine.currencies() {
            m.currencies.push(CurrencyEntry {
                id,
                spec: spec.clone(),
            });
        }
        for info in engine.pairs() {
            m.push_pair(info.id, info.spec);
        }
        m
    }

    fn push_pair(&mut self, id: PairId, spec: PairSpec) {
        let base = &self.currencies[spec.base.0 as usize].spec;
        let quote = &self.currencies[spec.quote.0 as usize].spec;
        let scale = spec
            .scale(base.decimals, quote.decimals)
            .expect("the engine accepted this pair");
        self.pairs.push(PairEntry {
            id,
            symbol: format!("{}_{}", base.code, quote.code),
            base_decimals: base.decimals,
            quote_decimals: quote.decimals,
            spec,
            scale,
        });
    }

    /// Follows the operator commands of a processed command that the engine accepted.
    pub fn apply(&mut self, processed: &Processed<'_>) {
        for event in processed.events {
            match (event, processed.command) {
                (Event::CurrencyAdded { currency }, Command::AddCurrency(spec)) => {
                    debug_assert_eq!(currency.0 as usize, self.currencies.len());
                    self.currencies.push(CurrencyEntry {
                        id: *currency,
                        spec: (**spec).clone(),
                    });
                }
                (Event::PairAdded { pair }, Command::AddPair(spec)) => {
                    debug_assert_eq!(pair.0 as usize, self.pairs.len());
                    self.push_pair(*pair, spec.clone());
                }
                (Event::PairStatusChanged { pair, status }, _) => {
                    if let Some(p) = self.pairs.get_mut(pair.0 as usize) {
                        p.spec.status = *status;
                    }
                }
                _ => {}
            }
        }
    }

    pub fn currencies(&self) -> &[CurrencyEntry] {
        &self.currencies
    }

    pub fn pairs(&self) -> &[PairEntry] {
        &self.pairs
    }

    pub fn currency(&self, id: CurrencyId) -> Option<&CurrencyEntry> {
        self.currencies.get(id.0 as usize)
    }

    pub fn currency_by_code(&self, code: &str) -> Option<&CurrencyEntry> {
        self.currencies.iter().find(|c| c.spec.code == code)
    }

    pub fn pair(&self, id: PairId) -> Option<&PairEntry> {
        self.pairs.get(id.0 as usize)
    }

    pub fn pair_by_symbol(&self, symbol: &str) -> Option<&PairEntry> {
        self.pairs.iter().find(|p| p.symbol == symbol)
    }

    pub fn is_halted(&self, id: PairId) -> bool {
        self.pair(id)
            .is_some_and(|p| p.spec.status == PairStatus::Halted)
    }
}
