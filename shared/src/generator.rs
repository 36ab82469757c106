//! A synthetic payments stream: skewed cards and merchants, a few countries, cents amounts,
//! event times that advance with the stream, a share of late events, and occasional fraud-like
//! bursts (one card, many merchants, large amounts, within seconds). Deterministic per seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const COUNTRIES: [&str; 8] = ["US", "DE", "FR", "BR", "IN", "JP", "GB", "NG"];

/// Shape of the generated stream.
#[derive(Debug, Clone)]
pub struct PaymentsShape {
    pub cards: u64,
    pub merchants: u64,
    /// Event-time milliseconds between consecutive events.
    pub spacing_ms: i64,
    /// Share of events whose time is up to `max_lateness_ms` in the past.
    pub late_share: f64,
    pub max_lateness_ms: i64,
    /// Chance that an event starts a fraud-like burst.
    pub burst_chance: f64,
}

impl Default for PaymentsShape {
    fn default() -> Self {
        Self {
            cards: 50_000,
            merchants: 2_000,
            spacing_ms: 1,
            late_share: 0.05,
            max_lateness_ms: 10 * 60_000,
            burst_chance: 0.0005,
        }
    }
}

/// Generates payment events as JSON bytes, with fields `tx_id`, `card_id`, `merchant_id`,
/// `country`, `amount` and `ts` (RFC 3339).
pub struct Payments {
    rng: StdRng,
    shape: PaymentsShape,
    next_id: u64,
    time_ms: i64,
    burst: Option<(u64, u32)>,
}

impl Payments {
    pub fn new(seed: u64, start_ms: i64, shape: PaymentsShape) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            shape,
            next_id: 0,
            time_ms: start_ms,
            burst: None,
        }
    }

    /// Event time of the next on-time event.
    pub fn clock_ms(&self) -> i64 {
        self.time_ms
    }

    /// Moves the stream's clock (e.g. to wall time for a live generator).
    pub fn set_clock_ms(&mut self, ms: i64) {
        self.time_ms = ms;
    }

    /// Skewed pick in `0..n`: a few keys are hot, most are cold.
    fn skewed(&mut self, n: u64) -> u64 {
        let u: f64 = self.rng.random();
        ((u * u * u) * n as f64) as u64 % n.max(1)
    }

    pub fn next_event(&mut self) -> Vec<u8> {
        let id = self.next_id;
        self.next_id += 1;
        self.time_ms += self.shape.spacing_ms;
        let mut ts = self.time_ms;
        if self.rng.random_bool(self.shape.late_share) {
            ts -= self.rng.random_range(0..self.shape.max_lateness_ms.max(1));
        }
        if self.burst.is_none() && self.rng.random_bool(self.shape.burst_chance) {
            let card = self.skewed(self.shape.cards);
            self.burst = Some((card, self.rng.random_range(10..40)));
        }
        let (card, cents) = match self.burst {
            Some((card, left)) => {
                self.burst = (left > 1).then_some((card, left - 1));
                (card, self.rng.random_range(50_000..500_000))
            }
            None => {
                let card = self.skewed(self.shape.cards);
                let cents = (self.rng.random::<f64>().powi(4) * 200_000.0) as u64 + 50;
                (card, cents)
            }
        };
        let merchant = self.skewed(self.shape.merchants);
        let country = COUNTRIES[(card % COUNTRIES.len() as u64) as usize];
        let time = chrono::DateTime::from_timestamp_millis(ts)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        format!(
            r#"{{"tx_id":"tx-{id:010}","card_id":"card-{card:06}","merchant_id":"m-{merchant:05}","country":"{country}","amount":{}.{:02},"currency":"USD","ts":"{time}"}}"#,
            cents / 100,
            cents % 100
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Decoder};

    #[test]
    fn events_decode_under_the_example_config_and_are_deterministic() {
        let config = Config::from_toml(include_str!("../../deploy/config/example.toml")).unwrap();
        let decoder = Decoder::new(config.source("payments").unwrap());
        let mut a = Payments::new(7, 1_790_000_000_000, PaymentsShape::default());
        let mut b = Payments::new(7, 1_790_000_000_000, PaymentsShape::default());
        for _ in 0..2000 {
            let event = a.next_event();
            assert_eq!(event, b.next_event());
            decoder.decode(&event).unwrap();
        }
    }
}
