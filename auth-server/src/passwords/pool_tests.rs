//! Tests of the hashing pool.
use super::*;
use argon2::PasswordHash as PhcHash;

fn settings(memory_kib: u32, iterations: u32) -> HashingSettings {
    HashingSettings {
        memory_kib,
        iterations,
        parallelism: 1,
        min_password_length: 8,
    }
}

#[tokio::test]
async fn pool_verifies_and_refuses_when_full() {
    let settings = settings(64, 1);
    let pool = HashPool::new(&settings, 1, 1).expect("valid params");
    let hash = pool
        .hash(Password::new("correct horse".into()))
        .await
        .expect("hash");
    assert!(!format!("{hash:?}").contains("argon2"));
    assert!(
        pool.verify(Password::new("correct horse".into()), Some(hash.clone()))
            .await
            .expect("verify")
    );
    assert!(
        !pool
            .verify(Password::new("wrong horse".into()), Some(hash))
            .await
            .expect("verify")
    );
    assert!(
        !pool
            .verify(Password::new("correct horse".into()), None)
            .await
            .expect("verify")
    );
}

#[tokio::test]
async fn our_phc_strings_and_the_standard_api_verify_each_other() {
    use argon2::PasswordVerifier as _;
    let settings = settings(64, 1);
    let pool = HashPool::new(&settings, 1, 1).expect("valid params");
    let standard = pool
        .hash_blocking(&Password::new("other horse".into()))
        .expect("hash");
    assert!(
        pool.verify(Password::new("other horse".into()), Some(standard))
            .await
            .expect("verify")
    );
    let ours = pool
        .hash(Password::new("third horse".into()))
        .await
        .expect("hash");
    assert!(ours.0.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
    let phc = PhcHash::new(&ours.0).expect("phc");
    assert!(
        Argon2::default()
            .verify_password(b"third horse", &phc)
            .is_ok()
    );
    assert!(
        Argon2::default()
            .verify_password(b"third horsf", &phc)
            .is_err()
    );
}

#[tokio::test]
async fn pool_refuses_beyond_threads_plus_queue() {
    let settings = settings(19_456, 2);
    let pool = HashPool::new(&settings, 1, 1).expect("valid params");
    let jobs = (0..6).map(|_| pool.hash(Password::new("correct horse".into())));
    let results = futures::future::join_all(jobs).await;
    let full = results
        .iter()
        .filter(|r| matches!(r, Err(HashError::QueueFull)))
        .count();
    // One runs, one waits; the other four are refused at once.
    assert_eq!(full, 4, "{results:?}");
    assert_eq!(pool.in_flight(), 0);
}

#[tokio::test]
async fn only_hashes_with_the_current_parameters_are_current() {
    let pool = HashPool::new(&settings(64, 1), 1, 1).expect("valid params");
    let older = HashPool::new(&settings(64, 2), 1, 1).expect("valid params");
    let ours = pool
        .hash(Password::new("correct horse".into()))
        .await
        .expect("hash");
    let theirs = older
        .hash(Password::new("correct horse".into()))
        .await
        .expect("hash");
    assert!(pool.is_current(&ours));
    assert!(!pool.is_current(&theirs));
    assert!(older.is_current(&theirs));
    let argon2i = ours.0.replacen("$argon2id$", "$argon2i$", 1);
    assert!(!pool.is_current(&PasswordHash(argon2i)));
    assert!(!pool.is_current(&PasswordHash("$2b$10$notargon".into())));
    assert!(!pool.is_current(&PasswordHash(String::new())));
}

#[tokio::test]
async fn jobs_that_waited_past_the_bound_are_refused_unrun() {
    let settings = settings(19_456, 2);
    let pool = HashPool::new(&settings, 1, 8).expect("valid params");
    pool.limit_wait(std::time::Duration::from_millis(1));
    let jobs = (0..6).map(|_| pool.hash(Password::new("correct horse".into())));
    let results = futures::future::join_all(jobs).await;
    let timed_out = results
        .iter()
        .filter(|r| matches!(r, Err(HashError::QueueTimeout)))
        .count();
    let hashed = results.iter().filter(|r| r.is_ok()).count();
    // Each hash takes far longer than 1 ms, so whatever queued behind one ran out of time:
    // at least the last four, and none of them was computed.
    assert!(timed_out >= 4, "{results:?}");
    assert_eq!(timed_out + hashed, 6, "{results:?}");
    assert_eq!(pool.computed(), hashed as u64);
    assert_eq!(pool.in_flight(), 0);
}

#[tokio::test]
async fn a_caller_that_gave_up_costs_no_hash() {
    let settings = settings(19_456, 2);
    let pool = HashPool::new(&settings, 1, 4).expect("valid params");
    let running = pool.hash(Password::new("correct horse".into()));
    let abandoned = pool.reserve().expect("place");
    let gave_up = tokio::time::timeout(
        std::time::Duration::from_millis(1),
        abandoned.hash(Password::new("other horse".into())),
    );
    let (first, second) = tokio::join!(running, gave_up);
    assert!(first.is_ok());
    assert!(second.is_err(), "the second caller timed out");
    // Wait until the abandoned job has been picked up and dropped.
    for _ in 0..200 {
        if pool.in_flight() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(pool.in_flight(), 0);
    assert_eq!(pool.computed(), 1);
}

/// Fields of `/proc/self/task/*/stat` (numbered as in proc(5)) of this process's hashing
/// threads. The name (field 2) is in parentheses; other tests' pools may run at the same time.
#[cfg(target_os = "linux")]
fn hashing_thread_stat_fields(field: usize) -> Vec<i64> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with("argon2-") {
            continue;
        }
        // Fields after the name start at field 3.
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        if let Some(value) = fields.get(field - 3).and_then(|n| n.parse().ok()) {
            found.push(value);
        }
    }
    found
}

/// Waits until at least `count` hashing threads show `want` in stat field `field`.
#[cfg(target_os = "linux")]
fn wait_for_threads_with(count: usize, field: usize, want: i64) {
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = hashing_thread_stat_fields(field);
        if seen.iter().filter(|&&n| n == want).count() >= count {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("no {count} hashing threads with {want} in stat field {field}: {seen:?}");
}

/// The nice value a thread of this process lowered by `by` ends up at.
#[cfg(target_os = "linux")]
fn lowered_nice(by: i64) -> i64 {
    let base = i64::from(
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(0),
    );
    (base + by).min(19)
}

#[cfg(target_os = "linux")]
#[test]
fn hashing_threads_run_at_the_lowered_priority() {
    // Field 19 is the nice value.
    let settings = settings(64, 1);
    let _pool = HashPool::with_priority(&settings, 2, 1, HashPriority::Nice(7)).expect("valid");
    wait_for_threads_with(2, 19, lowered_nice(7));
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn hashing_threads_run_under_sched_idle_and_still_hash() {
    // Field 41 is the scheduling policy; SCHED_IDLE is 5.
    let settings = settings(64, 1);
    let pool = HashPool::with_priority(&settings, 2, 1, HashPriority::Idle).expect("valid");
    wait_for_threads_with(2, 41, 5);
    let hash = pool
        .hash(Password::new("correct horse battery".into()))
        .await
        .expect("hashed");
    assert!(
        pool.verify(Password::new("correct horse battery".into()), Some(hash))
            .await
            .expect("verified")
    );
}

#[cfg(target_os = "linux")]
#[test]
fn mixed_priority_keeps_one_hashing_thread_at_a_nice_and_the_rest_idle() {
    // Field 41 is the policy (SCHED_OTHER 0, SCHED_IDLE 5), 19 the nice value.
    let settings = settings(64, 1);
    let _pool = HashPool::with_priority(&settings, 3, 1, HashPriority::Mixed(13)).expect("valid");
    wait_for_threads_with(2, 41, 5);
    wait_for_threads_with(1, 19, lowered_nice(13));
}

#[test]
fn mixed_priority_resolves_per_thread() {
    let mixed = HashPriority::Mixed(10);
    // The first thread (so also a thread alone) is never idle: it would get nothing while
    // requests keep the cores busy.
    assert_eq!(mixed.of_thread(0), HashPriority::Nice(10));
    assert_eq!(mixed.of_thread(1), HashPriority::Idle);
    assert_eq!(mixed.of_thread(3), HashPriority::Idle);
    assert_eq!(HashPriority::Idle.of_thread(0), HashPriority::Idle);
    assert_eq!(HashPriority::Nice(3).of_thread(2), HashPriority::Nice(3));
}
