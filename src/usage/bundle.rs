//! Prepaid token bundles, with the semantics of Go aperture's reference pricer `meterd`: one
//! payment buys `bundle_tokens` tokens of one model, priced at the model's blended rate; each
//! request reserves its `max_tokens` (or an estimate) while it runs, so concurrent requests
//! cannot overdraw a nearly empty bundle; its usage is then debited per direction, rounded up
//! (never in the client's favour), and an abandoned stream with no usage is settled at its
//! reservation. Pure: balances are plain values the caller keeps (on the token's owner core).

use std::collections::BTreeMap;

use super::openai::{ModelNamed, Usage};

/// One model's prices, in millisatoshis per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelRates {
    pub input_msat: u64,
    pub output_msat: u64,
}

impl ModelRates {
    /// Twice the blended rate (input + output), in msat per token.
    fn blend_x2(&self) -> u128 {
        u128::from(self.input_msat) + u128::from(self.output_msat)
    }
}

/// What a metered service sells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceTable {
    pub models: BTreeMap<String, ModelRates>,
    /// The model of a request that names none.
    pub default_model: Option<String>,
    /// Tokens in one bundle (meterd's default: 1,000,000).
    pub bundle_tokens: u64,
    /// Tokens reserved for a request without `max_tokens` (meterd's default: 4,096).
    pub estimated_tokens: u64,
}

/// Why a request cannot be metered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeterError {
    #[error("unknown model {0:?}")]
    UnknownModel(String),
    #[error("the request names no model and no default model is configured")]
    NoDefaultModel,
    #[error("the request's model could not be read from its body")]
    Unreadable,
}

impl PriceTable {
    /// The model a request is metered as, and its rates. Fails closed: an unpriced model or a
    /// body whose model cannot be read is never metered at another model's rate.
    pub fn resolve(&self, named: &ModelNamed) -> Result<(&str, ModelRates), MeterError> {
        let name = match named {
            ModelNamed::Named(m) => m.as_str(),
            ModelNamed::None => self
                .default_model
                .as_deref()
                .ok_or(MeterError::NoDefaultModel)?,
            ModelNamed::Unknown => return Err(MeterError::Unreadable),
        };
        self.models
            .get_key_value(name)
            .map(|(k, r)| (k.as_str(), *r))
            .ok_or_else(|| MeterError::UnknownModel(name.to_owned()))
    }

    /// The price of one bundle of `rates`' model: bundle × blended rate, rounded up to sats.
    pub fn bundle_price_sats(&self, rates: ModelRates) -> u64 {
        let msat_x2 = u128::from(self.bundle_tokens) * rates.blend_x2();
        u64::try_from(msat_x2.div_ceil(2000)).unwrap_or(u64::MAX)
    }

    /// Tokens to reserve for a request that asked for `max_tokens` (0: not given).
    pub fn reservation(&self, max_tokens: u64) -> u64 {
        if max_tokens > 0 {
            max_tokens
        } else {
            self.estimated_tokens
        }
    }
}

/// One token's bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub model: String,
    /// Unspent tokens.
    pub remaining: u64,
    /// Tokens held by requests in flight (not persisted: only live requests hold them).
    pub reserved: u64,
}

/// The answer to a paid request on a metered service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// Go ahead; `reserved` tokens are held until [`Bundle::settle`].
    Allowed { reserved: u64 },
    /// Spent (or fully reserved by requests in flight): a fresh 402 for another bundle.
    Exhausted,
    /// The request asks for another model than the bundle's: a fresh 402 for a bundle of the
    /// requested model (a cheap bundle never pays for an expensive model).
    OtherModel,
}

/// What a finished response tells the meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The usage found in the response's tail, if any.
    pub usage: Option<Usage>,
    /// The response reached its clean end (false: either side went away).
    pub complete: bool,
    /// The upstream's status.
    pub status: u16,
    /// Body bytes relayed to the client.
    pub body_bytes: u64,
}

impl Bundle {
    /// A fresh bundle of `table`'s size for `model`.
    pub fn new(model: &str, table: &PriceTable) -> Bundle {
        Bundle {
            model: model.to_owned(),
            remaining: table.bundle_tokens,
            reserved: 0,
        }
    }

    /// Admits a request for `model` reserving `estimate` tokens, while any balance is left
    /// beyond what requests in flight hold (one request may then overdraw by at most its
    /// actual usage beyond the estimate, as in meterd).
    pub fn authorize(&mut self, model: &str, estimate: u64) -> Authorization {
        if model != self.model {
            return Authorization::OtherModel;
        }
        if self.remaining <= self.reserved {
            return Authorization::Exhausted;
        }
        self.reserved = self.reserved.saturating_add(estimate);
        Authorization::Allowed { reserved: estimate }
    }

    /// Releases a request's reservation and debits what it used; returns the tokens debited.
    /// Usage is weighted by direction against the blended rate the bundle was priced at, so
    /// the msat value drawn always matches the msat value served. A response without usage is
    /// free, unless it was abandoned part-way through a successful, non-empty body: then it
    /// costs its reservation (a client must not get a stream for free by hanging up early).
    pub fn settle(&mut self, reserved: u64, outcome: Outcome, rates: ModelRates) -> u64 {
        self.reserved = self.reserved.saturating_sub(reserved);
        let debit = match outcome.usage {
            Some(usage) => debit_tokens(usage, rates),
            None if !outcome.complete
                && (200..300).contains(&outcome.status)
                && outcome.body_bytes > 0 =>
            {
                reserved
            }
            None => 0,
        };
        self.remaining = self.remaining.saturating_sub(debit);
        debit
    }
}

/// Bundle tokens a response's usage costs: with the split known, each prompt token weighs
/// `input / blend` and each completion token `output / blend`, rounded up; else the total.
pub fn debit_tokens(usage: Usage, rates: ModelRates) -> u64 {
    let blend_x2 = rates.blend_x2();
    if !usage.split || blend_x2 == 0 {
        return if usage.split {
            usage.prompt_tokens.saturating_add(usage.completion_tokens)
        } else {
            usage.total_tokens
        };
    }
    let value_x2 = 2
        * (u128::from(usage.prompt_tokens) * u128::from(rates.input_msat)
            + u128::from(usage.completion_tokens) * u128::from(rates.output_msat));
    u64::try_from(value_x2.div_ceil(blend_x2)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> PriceTable {
        let mut models = BTreeMap::new();
        models.insert(
            "small".to_owned(),
            ModelRates {
                input_msat: 1,
                output_msat: 3,
            },
        );
        models.insert(
            "big".to_owned(),
            ModelRates {
                input_msat: 10,
                output_msat: 30,
            },
        );
        PriceTable {
            models,
            default_model: Some("small".into()),
            bundle_tokens: 1_000_000,
            estimated_tokens: 4096,
        }
    }

    fn used(p: u64, c: u64) -> Usage {
        Usage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: p + c,
            split: true,
        }
    }

    fn done(usage: Option<Usage>) -> Outcome {
        Outcome {
            usage,
            complete: true,
            status: 200,
            body_bytes: 100,
        }
    }

    #[test]
    fn models_resolve_or_fail_closed() {
        let t = table();
        assert_eq!(t.resolve(&ModelNamed::None).unwrap().0, "small");
        assert_eq!(
            t.resolve(&ModelNamed::Named("big".into())).unwrap().0,
            "big"
        );
        assert_eq!(
            t.resolve(&ModelNamed::Named("gpt-9".into())),
            Err(MeterError::UnknownModel("gpt-9".into()))
        );
        assert_eq!(t.resolve(&ModelNamed::Unknown), Err(MeterError::Unreadable));
        let no_default = PriceTable {
            default_model: None,
            ..table()
        };
        assert_eq!(
            no_default.resolve(&ModelNamed::None),
            Err(MeterError::NoDefaultModel)
        );
    }

    #[test]
    fn a_bundle_is_priced_at_the_blended_rate_rounded_up() {
        let t = table();
        // 1,000,000 × (1 + 3) / 2 msat = 2,000,000 msat = 2,000 sat.
        assert_eq!(t.bundle_price_sats(t.models["small"]), 2000);
        let odd = PriceTable {
            bundle_tokens: 333,
            ..table()
        };
        // 333 × 2 = 666 msat → 1 sat (rounded up, never down).
        assert_eq!(odd.bundle_price_sats(odd.models["small"]), 1);
        assert_eq!(t.reservation(0), 4096);
        assert_eq!(t.reservation(50), 50);
    }

    #[test]
    fn usage_is_debited_per_direction_rounded_up() {
        let r = table().models["small"];
        // 10 prompt × 1 + 10 completion × 3 = 40 msat; blend 2 msat/token → 20 tokens.
        assert_eq!(debit_tokens(used(10, 10), r), 20);
        // All output costs more bundle tokens than its count: 10 × 3 / 2 = 15.
        assert_eq!(debit_tokens(used(0, 10), r), 15);
        // 1 completion token: 3 / 2 → 2 (rounded up).
        assert_eq!(debit_tokens(used(0, 1), r), 2);
        let total_only = Usage {
            total_tokens: 77,
            ..Usage::default()
        };
        assert_eq!(debit_tokens(total_only, r), 77);
    }

    #[test]
    fn reservations_keep_concurrent_requests_from_overdrawing() {
        let t = table();
        let mut b = Bundle {
            remaining: 5000,
            ..Bundle::new("small", &t)
        };
        assert_eq!(
            b.authorize("small", 4096),
            Authorization::Allowed { reserved: 4096 }
        );
        assert_eq!(
            b.authorize("small", 4096),
            Authorization::Allowed { reserved: 4096 }
        );
        // 8192 reserved against 5000 left: the third waits for a fresh bundle.
        assert_eq!(b.authorize("small", 4096), Authorization::Exhausted);
        let rates = t.models["small"];
        assert_eq!(b.settle(4096, done(Some(used(100, 100))), rates), 200);
        assert_eq!((b.remaining, b.reserved), (4800, 4096));
        assert_eq!(b.authorize("big", 10), Authorization::OtherModel);
    }

    #[test]
    fn a_bundle_serves_until_spent_then_asks_for_another() {
        let t = PriceTable {
            bundle_tokens: 100,
            ..table()
        };
        let rates = t.models["small"];
        let mut b = Bundle::new("small", &t);
        let mut served = 0;
        while let Authorization::Allowed { reserved } = b.authorize("small", 10) {
            b.settle(reserved, done(Some(used(10, 10))), rates);
            served += 1;
        }
        // 20 tokens a request from 100: five requests, then a fresh 402.
        assert_eq!((served, b.remaining), (5, 0));
    }

    #[test]
    fn an_abandoned_stream_without_usage_costs_its_reservation() {
        let t = table();
        let rates = t.models["small"];
        let mut b = Bundle::new("small", &t);
        let Authorization::Allowed { reserved } = b.authorize("small", 300) else {
            panic!("allowed");
        };
        let abandoned = Outcome {
            usage: None,
            complete: false,
            status: 200,
            body_bytes: 4000,
        };
        assert_eq!(b.settle(reserved, abandoned, rates), 300);
        // Nothing sent, an error status, or a complete body without usage: free.
        for o in [
            Outcome {
                body_bytes: 0,
                ..abandoned
            },
            Outcome {
                status: 502,
                ..abandoned
            },
            done(None),
        ] {
            let before = b.remaining;
            b.authorize("small", 300);
            assert_eq!(b.settle(300, o, rates), 0, "{o:?}");
            assert_eq!(b.remaining, before);
        }
        assert_eq!(b.reserved, 0);
    }
}
