//! A few plain threads that sign the dev backend's invoices. One ECDSA signature per 402 is the
//! challenge path's main cost; on the bridge's one tokio thread it capped challenges at that
//! thread's signing rate whatever the number of cores (measured on 16 CPUs: ~10–18 k/s flat
//! from `--cores 1` to 8). Jobs are handed over without blocking the runtime: when the queue is
//! full the caller signs inline, which is the old behaviour and a natural back-pressure.

use crossbeam_channel::{Sender, TrySendError};

/// Most signer threads started (each signs ~30–50 k invoices/s; more only adds contention on
/// the invoice book).
const MAX_SIGNERS: usize = 4;
/// Jobs queued for the signers beyond which callers sign inline.
const QUEUE: usize = 4096;

type Job = Box<dyn FnOnce() + Send>;

/// The signer threads; they exit when this (the only sender) is dropped.
pub(crate) struct Signers {
    jobs: Sender<Job>,
}

impl Signers {
    /// Starts one signer per CPU this process may use, beyond the first, up to [`MAX_SIGNERS`];
    /// `None` on a single CPU (signing inline costs nothing extra there) or if no thread starts.
    pub(crate) fn start() -> Option<Self> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let wanted = cpus.saturating_sub(1).min(MAX_SIGNERS);
        let (tx, rx) = crossbeam_channel::bounded::<Job>(QUEUE);
        let mut started = 0;
        for i in 0..wanted {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("bridge-signer-{i}"))
                .spawn(move || {
                    for job in rx {
                        job();
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::warn!("cannot start invoice signer {i}: {e}"),
            }
        }
        (started > 0).then_some(Self { jobs: tx })
    }

    /// Runs `job` on a signer thread; gives it back when every signer is busy and the queue is
    /// full (or the signers are gone).
    pub(crate) fn try_run(&self, job: Job) -> Result<(), Job> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_on_signer_threads_and_a_full_queue_gives_the_job_back() {
        let Some(signers) = Signers::start() else {
            return println!("skipped: one CPU, no signer threads");
        };
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..100 {
            let tx = tx.clone();
            let job: Job = Box::new(move || {
                let name = std::thread::current().name().map(str::to_owned);
                tx.send((i, name)).unwrap();
            });
            assert!(signers.try_run(job).is_ok());
        }
        let mut seen: Vec<_> = (0..100).map(|_| rx.recv().unwrap()).collect();
        seen.sort_by_key(|(i, _)| *i);
        assert!(seen.iter().enumerate().all(|(i, (j, _))| i == *j));
        assert!(seen.iter().all(|(_, name)| name
            .as_deref()
            .is_some_and(|n| n.starts_with("bridge-signer-"))));
    }
}
