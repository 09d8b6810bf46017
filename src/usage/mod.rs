//! Layer 0, pure (no I/O, no threads, no clock): the accounting behind the built-in meter for
//! OpenAI-compatible services. [`openai`] reads what an exchange says about its cost (the
//! request's `model` and `max_tokens`, the response's `usage`) from bounded byte windows;
//! [`bundle`] keeps prepaid token bundles with the semantics of Go aperture's `meterd`
//! (blended bundle price, reservations, per-direction debits, abandoned streams settled at the
//! reservation, unknown models refused).
//!
//! The data path ([`crate::proxy::bundles`]) keeps these bundles on each token's owner core
//! for services with `metering: openai`.

pub mod bundle;
pub mod openai;

pub use bundle::{Authorization, Bundle, MeterError, ModelRates, Outcome, PriceTable};
pub use openai::{max_tokens_of, model_of, usage_from_tail, ModelNamed, Usage};
