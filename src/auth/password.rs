//! Password hashing: Argon2id (the `argon2` crate's defaults, OWASP's recommendation: 19 MiB,
//! 2 passes) with a random 16-byte salt per hash, stored as a PHC string
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`). Slow on purpose (tens of milliseconds):
//! a login's verification runs on a verifier thread beside the shards
//! ([`verify_off_shard`]), at most [`VERIFIER_THREADS`] at once, so a flood of logins never
//! holds a shard's reactor. A password is never logged or kept.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::sync::OnceLock;

use rand::RngCore;

#[derive(Debug, thiserror::Error)]
#[error("hashing the password failed: {0}")]
pub struct HashError(String);

/// The salted hash of `password`, as stored in the roles table.
pub fn hash(password: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    // A CSPRNG seeded from the OS (rand's thread generator).
    rand::thread_rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError(e.to_string()))?;
    let hashed = Argon2::default().hash_password(password.as_bytes(), &salt).map_err(|e| HashError(e.to_string()))?;
    Ok(hashed.to_string())
}

/// Whether `password` is the one `stored` was made from. A stored value that is not a PHC
/// string matches nothing. `None` (no such role) costs a verification all the same, so that
/// the time of a refusal does not tell whether the role exists.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    let matches = |stored: &str| match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    };
    match stored {
        Some(stored) => matches(stored),
        None => {
            let _ = matches(decoy());
            false
        }
    }
}

/// Threads verifying passwords beside the shards: at most this many Argon2 computations (19 MiB
/// each) run at once in the process, whatever the number of logins.
pub const VERIFIER_THREADS: usize = 2;

/// Verifications waiting for a verifier thread; a login beyond it waits for room (bounded by
/// its connection's handshake timeout), in arrival order.
pub const MAX_WAITING_VERIFICATIONS: usize = 64;

/// One verification for a verifier thread; the password is dropped once checked.
struct Job {
    password: String,
    stored: Option<String>,
    reply: flume::Sender<bool>,
}

/// The verifier threads' queue, started by the first login of the process.
fn verifiers() -> &'static flume::Sender<Job> {
    static QUEUE: OnceLock<flume::Sender<Job>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (jobs, queue) = flume::bounded::<Job>(MAX_WAITING_VERIFICATIONS);
        for n in 0..VERIFIER_THREADS {
            let queue = queue.clone();
            let started = std::thread::Builder::new().name(format!("password-verifier-{n}")).spawn(move || {
                while let Ok(job) = queue.recv() {
                    // The login may have gone (its connection closed): nobody to tell.
                    let _ = job.reply.send(verify(&job.password, job.stored.as_deref()));
                }
            });
            if let Err(e) = started {
                tracing::error!(error = %e, "starting a password verifier thread");
            }
        }
        jobs
    })
}

/// [`verify`] on a verifier thread: the calling shard awaits the answer and serves its other
/// requests meanwhile. `false` as well if no verifier thread could be started.
pub async fn verify_off_shard(password: String, stored: Option<String>) -> bool {
    let (reply, answer) = flume::bounded(1);
    if verifiers().send_async(Job { password, stored, reply }).await.is_err() {
        return false;
    }
    answer.recv_async().await.unwrap_or(false)
}

/// A hash, made once per process, of a password nobody has (random bytes never kept).
fn decoy() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        hash(&secret).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only_and_is_salted() {
        let a = hash("s3cret").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert!(!a.contains("s3cret"));
        assert!(verify("s3cret", Some(&a)));
        assert!(!verify("s3cret!", Some(&a)));
        assert_ne!(a, hash("s3cret").unwrap(), "each hash has its own salt");
        assert!(!verify("s3cret", Some("not a hash")));
        assert!(!verify("s3cret", None));
        assert!(decoy().starts_with("$argon2id$"));
    }

    #[test]
    fn verifications_off_the_shard_answer_each_their_own() {
        let a = hash("s3cret").unwrap();
        let checks: Vec<_> = (0..8)
            .map(|i| {
                let password = if i % 2 == 0 { "s3cret" } else { "wrong" };
                verify_off_shard(password.to_owned(), Some(a.clone()))
            })
            .collect();
        let answers: Vec<bool> = checks.into_iter().map(futures_lite::future::block_on).collect();
        assert_eq!(answers, [true, false, true, false, true, false, true, false]);
        assert!(!futures_lite::future::block_on(verify_off_shard("s3cret".into(), None)));
    }
}
