//! Rate limits on the REST API (and the console's login): a token bucket per client. A client
//! is its token once the token is verified, and its address until then, so requests with made-up
//! tokens all count against their address. Past the limit: 429 with `Retry-After`, not a
//! dropped connection.
//!
//! Memory is bounded: past `capacity` clients, buckets idle long enough to have refilled are
//! forgotten (forgetting a full bucket changes nothing), then the least recently seen tenth.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Whose bucket a request takes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Client {
    /// A verified token, by id.
    Token(String),
    /// An address (an IPv6 one by its /64, what one host is usually given).
    Address(IpAddr),
}

impl Client {
    pub fn address(ip: IpAddr) -> Client {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client::Address(IpAddr::V4(v4)),
                None => Client::Address(IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into())),
            },
            v4 => Client::Address(v4),
        }
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    capacity: usize,
    buckets: Mutex<HashMap<Client, Bucket>>,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: f64, capacity: usize) -> Self {
        RateLimiter {
            per_second: per_second.max(0.01),
            burst: burst.max(1.0),
            capacity: capacity.max(10),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `client`'s bucket; `Err(seconds)` to wait when it is empty.
    pub fn take(&self, client: &Client) -> Result<(), f64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate buckets");
        if buckets.len() >= self.capacity && !buckets.contains_key(client) {
            self.evict(&mut buckets, now);
        }
        let bucket = buckets.entry(client.clone()).or_insert(Bucket { tokens: self.burst, last: now });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.last).as_secs_f64() * self.per_second).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - bucket.tokens) / self.per_second)
        }
    }

    /// Frees at least a tenth of the capacity: refilled buckets first, then the least recently
    /// seen (so one eviction pays for the next `capacity / 10` new clients).
    fn evict(&self, buckets: &mut HashMap<Client, Bucket>, now: Instant) {
        let refilled = Duration::from_secs_f64(self.burst / self.per_second);
        buckets.retain(|_, b| now.duration_since(b.last) < refilled);
        let target = self.capacity - self.capacity / 10;
        if buckets.len() > target {
            let mut by_age: Vec<(Instant, Client)> = buckets.iter().map(|(c, b)| (b.last, c.clone())).collect();
            let excess = buckets.len() - target;
            by_age.select_nth_unstable_by_key(excess - 1, |(last, _)| *last);
            for (_, client) in &by_age[..excess] {
                buckets.remove(client);
            }
        }
    }

    /// Clients remembered now.
    pub fn clients(&self) -> usize {
        self.buckets.lock().expect("rate buckets").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> Client {
        Client::Address(IpAddr::V4(n.into()))
    }

    #[test]
    fn buckets_allow_a_burst_then_the_rate() {
        let r = RateLimiter::new(1.0, 3.0, 100);
        let a = Client::Token("a".into());
        assert!(r.take(&a).is_ok() && r.take(&a).is_ok() && r.take(&a).is_ok());
        let wait = r.take(&a).unwrap_err();
        assert!(wait > 0.5 && wait <= 1.0, "{wait}");
        assert!(r.take(&Client::Token("b".into())).is_ok(), "clients have their own buckets");
    }

    #[test]
    fn a_flood_of_new_clients_forgets_the_least_recent_not_every_bucket() {
        let r = RateLimiter::new(0.01, 2.0, 100);
        let busy = ip(1);
        assert!(r.take(&busy).is_ok() && r.take(&busy).is_ok());
        for n in 2..1_000 {
            let _ = r.take(&ip(n));
            assert!(r.take(&busy).is_err(), "the busy client stays limited after {n} new clients");
            assert!(r.clients() <= 100);
        }
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(Client::address(a), Client::address(b));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(Client::address(mapped), Client::Address("10.0.0.1".parse().unwrap()));
    }
}
