//! Validation of a service's built-in meter (ours; Go aperture has no such key):
//! `metering: openai` and its `meter:` block (bundle size, reservation estimate, default model,
//! per-model prices) become a [`PriceTable`]. Errors name the service and the key.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::raw::RawMeter;
use super::validate::{nonempty, Ctx};
use super::ConfigError;
use crate::usage::{ModelRates, PriceTable};

/// meterd's bundle size.
pub const DEFAULT_BUNDLE_TOKENS: u64 = 1_000_000;
/// meterd's reservation for a request without `max_tokens`.
pub const DEFAULT_ESTIMATED_TOKENS: u64 = 4096;
/// Largest price per token (1 sat = 1000 msat per token is already far above any model's).
const MAX_MSAT_PER_TOKEN: i64 = 1_000_000;
/// Largest bundle (10^12 tokens).
const MAX_TOKENS: i64 = 1_000_000_000_000;

/// The price table of `services[i]`, `None` when it is not metered by the built-in meter.
/// `at` is the service's error prefix (`services[1] (llm)`).
pub(super) fn meter(
    at: &str,
    metering: Option<String>,
    block: Option<RawMeter>,
    dynamic: bool,
    cx: &Ctx<'_>,
) -> Result<Option<Arc<PriceTable>>, ConfigError> {
    let key = |field: &str| format!("{at}.{field}");
    let metering = metering.as_deref().map(str::trim).filter(|m| !m.is_empty());
    let Some(m) = metering else {
        if block.is_some() {
            return Err(cx.invalid(
                key("meter"),
                "is only read with metering: openai; add that key or remove the block",
            ));
        }
        return Ok(None);
    };
    if !m.eq_ignore_ascii_case("openai") {
        return Err(cx.invalid(
            key("metering"),
            format!("{m:?} is not a meter; the built-in one is \"openai\""),
        ));
    }
    if dynamic {
        return Err(cx.invalid(
            key("metering"),
            "cannot be combined with dynamicprice.enabled: the built-in meter replaces the \
             pricer (remove one; for a metered pricer use dynamicprice.metered)",
        ));
    }
    let b = block.ok_or_else(|| {
        cx.invalid(
            key("meter"),
            "is required with metering: openai: give meter.models with each model's \
             inputmsatpertoken and outputmsatpertoken",
        )
    })?;
    let count = |field: &str, v: Option<i64>, default: u64| match v {
        None | Some(0) => Ok(default),
        Some(n) if (1..=MAX_TOKENS).contains(&n) => Ok(n as u64),
        Some(n) => Err(cx.invalid(
            key(&format!("meter.{field}")),
            format!("{n} is out of range; use 1..={MAX_TOKENS} tokens (default {default})"),
        )),
    };
    let bundle_tokens = count("bundletokens", b.bundletokens, DEFAULT_BUNDLE_TOKENS)?;
    let estimated_tokens = count(
        "estimatedtokens",
        b.estimatedtokens,
        DEFAULT_ESTIMATED_TOKENS,
    )?;
    let mut models = BTreeMap::new();
    for (name, p) in b.models.unwrap_or_default() {
        let field = |f: &str| key(&format!("meter.models.{name}.{f}"));
        let rate = |f: &str, v: Option<i64>| match v {
            Some(n) if (0..=MAX_MSAT_PER_TOKEN).contains(&n) => Ok(n as u64),
            Some(n) => Err(cx.invalid(
                field(f),
                format!("{n} is out of range; use 0..={MAX_MSAT_PER_TOKEN} msat per token"),
            )),
            None => Err(cx.invalid(field(f), "is required (msat per token)")),
        };
        let rates = ModelRates {
            input_msat: rate("inputmsatpertoken", p.inputmsatpertoken)?,
            output_msat: rate("outputmsatpertoken", p.outputmsatpertoken)?,
        };
        if rates.input_msat == 0 && rates.output_msat == 0 {
            return Err(cx.invalid(
                field("inputmsatpertoken"),
                "and outputmsatpertoken are both 0: a free model needs no meter (use a \
                 service with auth: off for it)",
            ));
        }
        if name.is_empty() {
            return Err(cx.invalid(key("meter.models"), "a model name is empty"));
        }
        models.insert(name, rates);
    }
    if models.is_empty() {
        return Err(cx.invalid(
            key("meter.models"),
            "is required with metering: openai: at least one model with its \
             inputmsatpertoken and outputmsatpertoken",
        ));
    }
    let default_model = nonempty(b.defaultmodel.as_deref()).map(str::to_owned);
    if let Some(d) = &default_model {
        if !models.contains_key(d) {
            let known: Vec<&str> = models.keys().map(String::as_str).collect();
            return Err(cx.invalid(
                key("meter.defaultmodel"),
                format!(
                    "{d:?} is not under meter.models (known: {})",
                    known.join(", ")
                ),
            ));
        }
    }
    Ok(Some(Arc::new(PriceTable {
        models,
        default_model,
        bundle_tokens,
        estimated_tokens,
    })))
}

#[cfg(test)]
mod tests {
    use super::super::parse;

    const MIN: &str =
        "listenaddr: \"127.0.0.1:8081\"\ndbbackend: sqlite\nauthenticator:\n  dev: {}\n";

    fn svc(extra: &str) -> String {
        format!(
            "{MIN}services:\n  - name: llm\n    hostregexp: '.*'\n    address: \"127.0.0.1:9\"\n{extra}"
        )
    }

    fn err(extra: &str) -> String {
        parse(&svc(extra), "t").unwrap_err().to_string()
    }

    const MODELS: &str =
        "      models:\n        m: {inputmsatpertoken: 1, outputmsatpertoken: 3}\n";

    #[test]
    fn a_meter_block_becomes_a_price_table_with_meterds_defaults() {
        let c = parse(
            &svc(&format!("    metering: openai\n    meter:\n{MODELS}")),
            "t",
        )
        .unwrap();
        let t = c.services[0].meter.clone().unwrap();
        assert_eq!((t.bundle_tokens, t.estimated_tokens), (1_000_000, 4096));
        assert_eq!(t.models["m"].output_msat, 3);
        assert_eq!(t.default_model, None);
        let c = parse(
            &svc(&format!(
                "    metering: OpenAI\n    meter:\n      bundletokens: 10\n      estimatedtokens: 5\n      defaultmodel: m\n{MODELS}"
            )),
            "t",
        )
        .unwrap();
        let t = c.services[0].meter.clone().unwrap();
        assert_eq!((t.bundle_tokens, t.estimated_tokens), (10, 5));
        assert_eq!(t.default_model.as_deref(), Some("m"));
        assert!(parse(&svc(""), "t").unwrap().services[0].meter.is_none());
    }

    #[test]
    fn mistakes_are_named() {
        let e = err("    metering: openai\n");
        assert!(e.contains("meter") && e.contains("required"), "{e}");
        let e = err("    metering: openai\n    meter:\n      bundletokens: 5\n");
        assert!(e.contains("meter.models"), "{e}");
        let e = err(&format!(
            "    metering: openai\n    meter:\n      defaultmodel: x\n{MODELS}"
        ));
        assert!(
            e.contains("meter.defaultmodel") && e.contains("\"x\""),
            "{e}"
        );
        let e = err(&format!("    metering: anthropic\n    meter:\n{MODELS}"));
        assert!(e.contains("metering") && e.contains("openai"), "{e}");
        let e = err(&format!("    meter:\n{MODELS}"));
        assert!(e.contains("only read with metering: openai"), "{e}");
        let e = err(&format!(
            "    price: 5\n    metering: openai\n    meter:\n{MODELS}"
        ));
        assert!(e.contains("price") && e.contains("must be unset"), "{e}");
        let e = err(&format!(
            "    metering: openai\n    meter:\n{MODELS}    dynamicprice:\n      enabled: true\n      grpcaddress: \"127.0.0.1:1\"\n      insecure: true\n"
        ));
        assert!(e.contains("dynamicprice.enabled"), "{e}");
        let e = err(
            "    metering: openai\n    meter:\n      models:\n        m: {inputmsatpertoken: 1}\n",
        );
        assert!(e.contains("meter.models.m.outputmsatpertoken"), "{e}");
        let e = err("    metering: openai\n    meter:\n      models:\n        m: {inputmsatpertoken: 0, outputmsatpertoken: 0}\n");
        assert!(e.contains("both 0"), "{e}");
        let e = err(&format!(
            "    metering: openai\n    meter:\n      bundletokens: -1\n{MODELS}"
        ));
        assert!(e.contains("meter.bundletokens"), "{e}");
    }
}
