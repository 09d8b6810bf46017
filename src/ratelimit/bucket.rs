//! One token bucket and the rule it follows, with `golang.org/x/time/rate` arithmetic (f64 tokens,
//! waits truncated to whole nanoseconds). Pure: time is a `u64` nanosecond count the caller passes.

use super::RateLimitError;

const NS_PER_SEC: f64 = 1e9;

/// The rate and capacity of one rule, in plain numbers (layer 0 never sees the config types).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rule {
    /// Tokens per second: `requests / per`.
    rate: f64,
    /// Bucket capacity.
    burst: f64,
    /// Nanoseconds per token (`1e9 / rate`), for the full-at time.
    ns_per_token: f64,
}

impl Rule {
    /// `requests` per `per_ns` nanoseconds, bucket capacity `burst`. A `burst` of 0 means every
    /// request is denied with a 1 s wait, as Go's limiter does (the config turns an omitted burst
    /// into `requests` before it gets here).
    pub fn new(requests: u32, per_ns: u64, burst: u32) -> Result<Self, RateLimitError> {
        if requests == 0 {
            return Err(RateLimitError::ZeroRequests);
        }
        if per_ns == 0 {
            return Err(RateLimitError::ZeroPeriod);
        }
        let rate = f64::from(requests) / (per_ns as f64 / NS_PER_SEC);
        Ok(Self {
            rate,
            burst: f64::from(burst),
            ns_per_token: NS_PER_SEC / rate,
        })
    }

    /// Tokens per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Bucket capacity.
    pub fn burst(&self) -> f64 {
        self.burst
    }
}

/// A token bucket. It does not store its rule: the limiter keeps one rule for many buckets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    tokens: f64,
    last_ns: u64,
}

impl Bucket {
    /// A full bucket (what a client that was never seen, or was evicted, gets).
    pub fn full(rule: &Rule, now_ns: u64) -> Self {
        Self {
            tokens: rule.burst,
            last_ns: now_ns,
        }
    }

    /// Tokens left (may be a hair below zero, as in Go, after a sub-nanosecond-wait grant).
    pub fn tokens(&self) -> f64 {
        self.tokens
    }

    /// Adds the tokens earned since the last refill, capped at the burst. A clock that goes
    /// backwards earns nothing and moves the reference point back, as `x/time/rate` does.
    #[inline]
    pub fn refill(&mut self, rule: &Rule, now_ns: u64) {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        if elapsed > 0 && self.tokens < rule.burst {
            let earned = (elapsed as f64 / NS_PER_SEC) * rule.rate;
            self.tokens = (self.tokens + earned).min(rule.burst);
        }
        self.last_ns = now_ns;
    }

    /// How long until one token is available, in nanoseconds; `0` means take it now. Like Go,
    /// the wait is truncated to whole nanoseconds, so a deficit worth less than 1 ns is granted.
    /// A bucket that can never hold a token (burst < 1) waits 1 s (Go's not-OK reservation).
    #[inline]
    pub fn wait_ns(&self, rule: &Rule) -> u64 {
        if rule.burst < 1.0 {
            return 1_000_000_000;
        }
        let deficit = 1.0 - self.tokens;
        if deficit <= 0.0 {
            return 0;
        }
        // `as` saturates for huge waits; a tiny rate cannot overflow into a panic.
        ((deficit / rule.rate) * NS_PER_SEC) as u64
    }

    /// Takes one token (after [`Bucket::wait_ns`] returned 0).
    #[inline]
    pub fn take(&mut self) {
        self.tokens -= 1.0;
    }

    /// The instant (ns, as f64) from which the bucket is full again, i.e. indistinguishable
    /// from a new one: `last + (burst - tokens) * 1e9 / rate`, or `last` when already full.
    #[inline]
    pub fn full_at(&self, rule: &Rule) -> f64 {
        self.last_ns as f64 + (rule.burst - self.tokens).max(0.0) * rule.ns_per_token
    }

    /// Whether the bucket is full at `now_ns` ([`Bucket::full_at`] has passed).
    #[inline]
    pub fn is_full_at(&self, rule: &Rule, now_ns: u64) -> bool {
        now_ns as f64 >= self.full_at(rule)
    }
}

/// `Retry-After` for a wait: whole seconds rounded up, at least 1.
pub fn retry_after_secs(wait_ns: u64) -> u64 {
    wait_ns.div_ceil(1_000_000_000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn refill_caps_at_burst_and_earns_at_rate() {
        let rule = Rule::new(10, SEC, 5).unwrap();
        let mut b = Bucket::full(&rule, 0);
        for _ in 0..5 {
            assert_eq!(b.wait_ns(&rule), 0);
            b.take();
        }
        assert_eq!(b.wait_ns(&rule), SEC / 10);
        b.refill(&rule, SEC / 10);
        assert_eq!(b.wait_ns(&rule), 0);
        assert_eq!(b.full_at(&rule), (SEC / 10 + 4 * SEC / 10) as f64);
        assert!(!b.is_full_at(&rule, SEC / 10 + 4 * SEC / 10 - 1));
        assert!(b.is_full_at(&rule, SEC / 10 + 4 * SEC / 10));
        b.refill(&rule, 100 * SEC);
        assert_eq!(b.tokens(), 5.0);
        assert!(b.is_full_at(&rule, 100 * SEC));
    }

    #[test]
    fn backwards_clock_earns_nothing() {
        let rule = Rule::new(1, SEC, 1).unwrap();
        let mut b = Bucket::full(&rule, 10 * SEC);
        b.take();
        b.refill(&rule, 5 * SEC);
        assert_eq!(b.tokens(), 0.0);
        b.refill(&rule, 6 * SEC);
        assert_eq!(b.tokens(), 1.0);
    }

    #[test]
    fn five_per_minute_waits_exactly_twelve_seconds() {
        let rule = Rule::new(5, 60 * SEC, 5).unwrap();
        let mut b = Bucket::full(&rule, 0);
        for _ in 0..5 {
            b.take();
        }
        assert_eq!(b.wait_ns(&rule), 12 * SEC);
        assert_eq!(retry_after_secs(b.wait_ns(&rule)), 12);
    }

    #[test]
    fn retry_after_rounds_up_with_floor_of_one() {
        assert_eq!(retry_after_secs(0), 1);
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(SEC), 1);
        assert_eq!(retry_after_secs(SEC + 1), 2);
        assert_eq!(retry_after_secs(u64::MAX), u64::MAX / SEC + 1);
    }

    #[test]
    fn zero_burst_always_waits_one_second() {
        let rule = Rule::new(5, SEC, 0).unwrap();
        let b = Bucket::full(&rule, 0);
        assert_eq!(b.wait_ns(&rule), SEC);
    }

    #[test]
    fn invalid_rules_are_errors() {
        assert_eq!(Rule::new(0, SEC, 1), Err(RateLimitError::ZeroRequests));
        assert_eq!(Rule::new(1, 0, 1), Err(RateLimitError::ZeroPeriod));
    }
}
