//! Helpers for the shard crate's tests on real files: a fresh glommio executor per test, and
//! seeded randomness that prints its seed when the test fails.

use std::future::Future;
use std::path::{Path, PathBuf};

use glommio::LocalExecutorBuilder;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::io::prepare_executor_io;

/// Runs `body(dir)` on a fresh executor after the device probe (docs/GLOMMIO.md, pitfall 1).
pub fn on_executor<T, F, Fut>(dir: &Path, body: F) -> T
where
    T: Send + 'static,
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let dir = dir.to_path_buf();
    LocalExecutorBuilder::default()
        .spawn(move || async move {
            prepare_executor_io(&dir).await.expect("probe the device");
            body(dir).await
        })
        .expect("spawn executor")
        .join()
        .expect("executor thread")
}

/// A test's random seed: from the environment variable `var` when set (to replay a failure),
/// else random; printed with the variable's name if the test fails.
pub struct Seed {
    seed: u64,
    var: &'static str,
}

impl Seed {
    pub fn from_env(var: &'static str) -> Seed {
        let seed = std::env::var(var).ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
        Seed { seed, var }
    }

    pub fn rng(&self) -> StdRng {
        StdRng::seed_from_u64(self.seed)
    }

    pub fn value(&self) -> u64 {
        self.seed
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed with {}={}", self.var, self.seed);
        }
    }
}
