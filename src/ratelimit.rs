//! A pacing limiter on tokio's clock: the account-wide API budget and each
//! notifier's send rate.
//!
//! Hand-written rather than `governor` because it must follow tokio's clock:
//! tests prove "no more than 20 a minute" with a paused clock, and governor
//! reads the system clock. It is a GCRA: requests are spaced `period / n`
//! apart, so no window of `period` holds more than `n`; the API budget
//! also allows a small burst after a quiet spell (still at most `n` in any
//! window), and serves its waiters by [`Priority`].

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// At most `count` messages per `per`: a configured or documented rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

impl RateLimit {
    pub const fn new(count: u32, per: Duration) -> RateLimit {
        RateLimit { count, per }
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.per.as_secs() {
            1 if self.per.subsec_nanos() == 0 => write!(f, "{}/s", self.count),
            60 if self.per.subsec_nanos() == 0 => write!(f, "{}/min", self.count),
            3600 if self.per.subsec_nanos() == 0 => write!(f, "{}/h", self.count),
            _ => {
                let per =
                    jiff::fmt::friendly::SpanPrinter::new().unsigned_duration_to_string(&self.per);
                write!(f, "{}/{per}", self.count)
            }
        }
    }
}

impl serde::Serialize for RateLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Who goes first when several wait for a slot: everything in the
/// foreground (incremental polls, `jobs`, deliveries) before any
/// background scan, but while both wait a first scan gets every other
/// slot and a reconciliation one in five (see [`FOREGROUND_RUN`]): a target
/// not yet baselined cannot alert at all. Among background scans, first
/// scans before reconciliations, then the one with the fewest pages left,
/// so a large baseline lets small scans through and several large ones
/// finish one after another instead of all together, late.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    Foreground,
    Background {
        kind: ScanKind,
        pages_left: u64,
        scan: u64,
    },
}

/// What a background scan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScanKind {
    /// A target's first scan: until it ends the target is silent.
    First,
    /// A scan of a target that already alerts.
    Reconcile,
}

/// A background scan's place in the queue: set around the scan with
/// [`Lane::run`], told how many pages it has left as it goes.
#[derive(Debug, Clone)]
pub struct Lane {
    kind: ScanKind,
    scan: u64,
    pages_left: Arc<AtomicU64>,
}

tokio::task_local! {
    static LANE: Lane;
}

static SCANS: AtomicU64 = AtomicU64::new(0);

impl Lane {
    /// A new background scan expected to take `pages` pages.
    pub fn background(kind: ScanKind, pages: u64) -> Lane {
        Lane {
            kind,
            scan: SCANS.fetch_add(1, Ordering::Relaxed),
            pages_left: Arc::new(AtomicU64::new(pages)),
        }
    }

    pub fn set_pages_left(&self, pages: u64) {
        self.pages_left.store(pages, Ordering::Relaxed);
    }

    /// Runs `work` with every slot it asks for taken in this lane.
    pub async fn run<F: Future>(&self, work: F) -> F::Output {
        LANE.scope(self.clone(), work).await
    }

    /// The priority of the task asking now.
    fn current() -> Priority {
        LANE.try_with(|lane| Priority::Background {
            kind: lane.kind,
            pages_left: lane.pages_left.load(Ordering::Relaxed),
            scan: lane.scan,
        })
        .unwrap_or(Priority::Foreground)
    }
}

#[derive(Debug)]
pub struct RateLimiter {
    /// Slots that may start at once after a quiet spell (1: none).
    burst: u32,
    /// At most `count` slots start in any window of `period`, burst or not
    /// (of this process's share: [`RateLimiter::set_share`]).
    count: u32,
    period: Duration,
    state: Mutex<State>,
    /// Told whenever a slot is taken, a waiter comes or goes, or a pause
    /// begins: the waiters then look again at who is first.
    changed: Notify,
    /// Told when a pause begins (a cluster spreads it to the others).
    paused: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// When the next slot would start with no burst (a GCRA's theoretical
    /// arrival time).
    next: Option<Instant>,
    /// The latest [`RateLimiter::pause_until`].
    paused_until: Option<Instant>,
    /// Starts of the last `count` slots, when `burst > 1`.
    recent: VecDeque<Instant>,
    waiting: BTreeSet<(Priority, u64)>,
    seq: u64,
    /// Slots the foreground took in a row: past [`FOREGROUND_RUN`] a
    /// waiting background scan gets the next one, so a budget the
    /// foreground fills does not starve first scans for ever.
    foreground_run: u32,
    /// This process's part of the rate, `(parts, of)`, when it shares it
    /// with others (replicas of a cluster); `None`: all of it.
    share: Option<(u32, u32)>,
}

/// The rate this process may use now: its share of the whole.
#[derive(Debug, Clone, Copy)]
struct Rate {
    interval: Duration,
    burst: u32,
    count: u32,
}

/// At most this many foreground slots in a row while a reconciliation
/// waits (it keeps a fifth of a saturated budget); a first scan waits for
/// one at most (it keeps half).
pub const FOREGROUND_RUN: u32 = 4;

impl State {
    /// Who takes the next slot.
    fn next_up(&self) -> Option<(Priority, u64)> {
        let first = *self.waiting.first()?;
        if first.0 != Priority::Foreground {
            return Some(first);
        }
        let lowest = Priority::Background {
            kind: ScanKind::First,
            pages_left: 0,
            scan: 0,
        };
        let background = self.waiting.range((lowest, 0)..).next().copied();
        let run = match background {
            Some((
                Priority::Background {
                    kind: ScanKind::First,
                    ..
                },
                _,
            )) => 1,
            Some(_) => FOREGROUND_RUN,
            None => return Some(first),
        };
        if self.foreground_run >= run {
            background
        } else {
            Some(first)
        }
    }
}

/// A waiter's place; leaving (a cancelled acquire) gives it up.
struct Ticket<'a> {
    limiter: &'a RateLimiter,
    key: Option<(Priority, u64)>,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.limiter.lock().waiting.remove(&key);
            self.limiter.changed.notify_waiters();
        }
    }
}

impl RateLimiter {
    /// At most `n` acquisitions per `period` (`n` of 0 is treated as 1),
    /// spaced `period / n` apart.
    pub fn new(n: u32, period: Duration) -> RateLimiter {
        RateLimiter {
            burst: 1,
            count: n.max(1),
            period,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            paused: Notify::new(),
        }
    }

    pub fn per_minute(n: u32) -> RateLimiter {
        RateLimiter::new(n, Duration::from_secs(60))
    }

    /// Lets up to `burst` slots start at once after a quiet spell, still
    /// never more than `n` in any `period`.
    pub fn with_burst(mut self, burst: u32) -> RateLimiter {
        self.burst = burst.clamp(1, self.count);
        self
    }

    /// The spacing of slots now (this process's share of the rate).
    pub fn interval(&self) -> Duration {
        self.rate(&self.lock()).interval
    }

    /// From now, this process takes `parts` of `of` equal parts of the
    /// rate (replicas of a cluster share it), at least one slot per period.
    pub fn set_share(&self, parts: u32, of: u32) {
        {
            let mut st = self.lock();
            let before = self.rate(&st).interval;
            st.share = (of > 0).then_some((parts.min(of), of));
            // A slot reserved at a slower rate comes no later than the new
            // rate allows (a replica that polled nothing and now holds
            // targets must not wait out a minute's spacing).
            let after = self.rate(&st).interval;
            if after < before
                && let Some(next) = st.next
            {
                st.next = Some(next.min(Instant::now() + after));
            }
        }
        self.changed.notify_waiters();
    }

    /// Until when a pause holds, if one does.
    pub fn paused_until(&self) -> Option<Instant> {
        let st = self.lock();
        st.paused_until.filter(|p| *p > Instant::now())
    }

    fn rate(&self, st: &State) -> Rate {
        let count = match st.share {
            Some((parts, of)) => {
                (u64::from(self.count) * u64::from(parts) / u64::from(of)).max(1) as u32
            }
            None => self.count,
        };
        Rate {
            interval: self.period / count,
            burst: self.burst.min(count),
            count,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Poisoning would need a panic while holding this lock, and
        // nothing that holds it can panic.
        self.state.lock().expect("rate limiter lock")
    }

    /// When the first waiter may start.
    fn earliest(&self, st: &State, now: Instant) -> Instant {
        let rate = self.rate(st);
        let tolerance = rate.interval * (rate.burst - 1);
        let mut at = st
            .next
            .map_or(now, |next| next.checked_sub(tolerance).unwrap_or(now))
            .max(now);
        if let Some(paused) = st.paused_until {
            at = at.max(paused);
        }
        if rate.burst > 1
            && st.recent.len() >= rate.count as usize
            && let Some(oldest) = st.recent.front()
        {
            at = at.max(*oldest + self.period);
        }
        at
    }

    /// Waits for a slot. Waiters are served by [`Priority`] (that of the
    /// [`Lane`] the caller runs in, else foreground), then in call order.
    /// A pause that begins while a waiter sleeps holds it too, and the
    /// queue stays paced after it instead of leaving at once.
    pub async fn acquire(&self) {
        let key = {
            let mut st = self.lock();
            st.seq += 1;
            let key = (Lane::current(), st.seq);
            st.waiting.insert(key);
            key
        };
        self.changed.notify_waiters();
        let mut ticket = Ticket {
            limiter: self,
            key: Some(key),
        };
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wake = {
                let mut st = self.lock();
                let now = Instant::now();
                let at = self.earliest(&st, now);
                let first = st.next_up() == Some(key);
                if first && at <= now {
                    st.waiting.remove(&key);
                    ticket.key = None;
                    st.foreground_run = match key.0 {
                        Priority::Foreground => st.foreground_run + 1,
                        Priority::Background { .. } => 0,
                    };
                    let rate = self.rate(&st);
                    st.next = Some(st.next.map_or(now, |n| n.max(now)) + rate.interval);
                    if rate.burst > 1 {
                        st.recent.push_back(now);
                        while st.recent.len() > rate.count as usize {
                            st.recent.pop_front();
                        }
                    }
                    drop(st);
                    self.changed.notify_waiters();
                    return;
                }
                first.then_some(at)
            };
            match wake {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = &mut changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// Pauses everyone until `until` (a receiver or the gateway said so),
    /// those already waiting included; no burst right after it.
    pub fn pause_until(&self, until: Instant) {
        {
            let mut st = self.lock();
            let rate = self.rate(&st);
            let paced = until + rate.interval * (rate.burst - 1);
            if st.next.is_none_or(|n| n < paced) {
                st.next = Some(paced);
            }
            if st.paused_until.is_none_or(|p| p < until) {
                st.paused_until = Some(until);
            }
        }
        self.changed.notify_waiters();
        self.paused.notify_waiters();
    }

    /// Resolves when a pause begins after the call.
    pub async fn pause_begins(&self) {
        self.paused.notified().await
    }

    /// When the next slot opens (for `state`/metrics); `None` if now.
    pub fn next_slot(&self) -> Option<Instant> {
        let st = self.lock();
        let now = Instant::now();
        let at = self.earliest(&st, now);
        (at > now).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn never_more_than_n_in_any_period() {
        let limiter = RateLimiter::per_minute(20);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..45 {
            limiter.acquire().await;
            times.push(start.elapsed());
        }
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .filter(|u| **u < *t + Duration::from_secs(60))
                .count();
            assert!(in_window <= 20, "{in_window} within a minute of {t:?}");
        }
        assert_eq!(times[44], Duration::from_secs(44 * 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_share_of_the_rate_is_the_rate_divided_by_the_processes() {
        let limiter = RateLimiter::per_minute(30).with_burst(5);
        limiter.set_share(1, 3);
        let start = Instant::now();
        for _ in 0..21 {
            limiter.acquire().await;
        }
        // 10 a minute: the burst is cut to 5 at most in any minute too.
        assert!(
            start.elapsed() >= Duration::from_secs(120),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(limiter.interval(), Duration::from_secs(6));
        limiter.set_share(2, 3);
        assert_eq!(limiter.interval(), Duration::from_secs(3));
        // A replica with no share whose slot was spaced a minute out gets
        // it at the new rate once it has a share.
        limiter.set_share(0, 3);
        assert_eq!(limiter.interval(), Duration::from_secs(60));
        limiter.acquire().await;
        let before = Instant::now();
        limiter.set_share(1, 1);
        assert_eq!(limiter.interval(), Duration::from_secs(2));
        limiter.acquire().await;
        assert!(
            before.elapsed() <= Duration::from_secs(2),
            "{:?}",
            before.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pause_holds_everyone() {
        let limiter = RateLimiter::per_minute(600);
        let start = Instant::now();
        limiter.acquire().await;
        limiter.pause_until(start + Duration::from_secs(30));
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    // Regression: a waiter that had reserved its slot before a pause went
    // out at that slot, inside the pause (a second target queued behind a
    // throttled one walked into the same gateway throttle).
    #[tokio::test(start_paused = true)]
    async fn pause_holds_those_already_waiting_and_keeps_them_paced() {
        let limiter = std::sync::Arc::new(RateLimiter::per_minute(60));
        let start = Instant::now();
        limiter.acquire().await;
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    limiter.acquire().await;
                    start.elapsed()
                })
            })
            .collect();
        // Let both reserve their slots (1 s and 2 s), then pause until 10 s.
        tokio::task::yield_now().await;
        limiter.pause_until(start + Duration::from_secs(10));
        let mut times = Vec::new();
        for waiter in waiters {
            times.push(waiter.await.unwrap());
        }
        times.sort();
        assert_eq!(times, [Duration::from_secs(10), Duration::from_secs(11)]);
    }

    #[tokio::test(start_paused = true)]
    async fn foreground_goes_before_background_and_fewest_pages_left_first() {
        let limiter = std::sync::Arc::new(RateLimiter::per_minute(60));
        let start = Instant::now();
        limiter.acquire().await;
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Queued in this order; served by priority.
        for (name, lane) in [
            ("big", Some(Lane::background(ScanKind::Reconcile, 100))),
            ("small", Some(Lane::background(ScanKind::Reconcile, 2))),
            ("poll", None),
        ] {
            let (limiter, order) = (limiter.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                match lane {
                    Some(lane) => lane.run(limiter.acquire()).await,
                    None => limiter.acquire().await,
                }
                order.lock().unwrap().push((name, start.elapsed()));
            }));
            tokio::task::yield_now().await;
        }
        for task in tasks {
            task.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(
            order,
            [
                ("poll", Duration::from_secs(1)),
                ("small", Duration::from_secs(2)),
                ("big", Duration::from_secs(3)),
            ]
        );
    }

    /// Slots of 100 (a minute and 40 s at 60 a minute) taken by one scan
    /// of each of `kinds`, beside four pollers that always want one.
    async fn slots_of_scans_beside_a_busy_foreground(kinds: &[ScanKind]) -> Vec<u64> {
        let limiter = std::sync::Arc::new(RateLimiter::per_minute(60));
        let stop = tokio_util::sync::CancellationToken::new();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (limiter, stop) = (limiter.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.is_cancelled() {
                    limiter.acquire().await;
                }
            }));
        }
        let taken: Vec<_> = kinds.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
        for (&kind, taken) in kinds.iter().zip(&taken) {
            let (limiter, stop, taken) = (limiter.clone(), stop.clone(), taken.clone());
            tasks.push(tokio::spawn(async move {
                let lane = Lane::background(kind, 10);
                while !stop.is_cancelled() {
                    lane.run(limiter.acquire()).await;
                    taken.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(100)).await;
        stop.cancel();
        for task in tasks {
            task.await.unwrap();
        }
        taken.iter().map(|t| t.load(Ordering::Relaxed)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_foreground_leaves_background_scans_one_slot_in_five() {
        let got = slots_of_scans_beside_a_busy_foreground(&[ScanKind::Reconcile]).await[0];
        assert!((19..=21).contains(&got), "{got} of 100 slots");
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_scan_gets_every_other_slot_of_a_busy_foreground() {
        let got = slots_of_scans_beside_a_busy_foreground(&[ScanKind::First, ScanKind::Reconcile])
            .await[0];
        assert!((49..=51).contains(&got), "{got} of 100 slots");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_gives_its_place_up() {
        let limiter = std::sync::Arc::new(RateLimiter::per_minute(60));
        let start = Instant::now();
        limiter.acquire().await;
        // Waits for the slot at 1 s, and is dropped before it.
        let gone = tokio::time::timeout(Duration::from_millis(500), limiter.acquire()).await;
        assert!(gone.is_err());
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_and_the_window_still_holds_at_most_n() {
        let limiter = RateLimiter::per_minute(10).with_burst(4);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..25 {
            limiter.acquire().await;
            times.push(start.elapsed());
        }
        assert_eq!(&times[..4], [Duration::ZERO; 4]);
        assert_eq!(times[4], Duration::from_secs(6));
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .filter(|u| **u < *t + Duration::from_secs(60))
                .count();
            assert!(in_window <= 10, "{in_window} within a minute of {t:?}");
        }
    }
}
