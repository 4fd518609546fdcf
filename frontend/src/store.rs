//! What every page shares: the experiments, every job (kept current by the `/events`
//! stream), the schema, and the state of the events connection.

use leptos::{prelude::*, task::spawn_local};
use lightpeft_api::rest::{Event, Experiment, Job, Schema};

use crate::{
    api::{self, Failure},
    events::{self, Link},
};

/// Shared state, provided as context by the app.
#[derive(Clone, Copy)]
pub struct Store {
    /// Every experiment, newest first.
    pub experiments: RwSignal<Vec<Experiment>>,
    /// Every job, kept current by events.
    pub jobs: RwSignal<Vec<Job>>,
    /// The hyper-parameter schema, tasks and models.
    pub schema: RwSignal<Option<Schema>>,
    /// The last failure loading the above.
    pub failure: RwSignal<Option<Failure>>,
    /// The `/events` connection.
    pub link: RwSignal<Link>,
    /// Whether the API asked for a token.
    pub auth_needed: RwSignal<bool>,
}

impl Store {
    /// Creates the store, loads it and subscribes to `/events`.
    pub fn start() -> Store {
        let store = Store {
            experiments: RwSignal::new(Vec::new()),
            jobs: RwSignal::new(Vec::new()),
            schema: RwSignal::new(None),
            failure: RwSignal::new(None),
            link: RwSignal::new(Link::Connecting),
            auth_needed: RwSignal::new(false),
        };
        api::watch_auth(store.auth_needed);
        spawn_local(async move {
            match api::get::<Schema>("/schema").await {
                Ok(s) => store.schema.set(Some(s)),
                Err(e) => store.failure.set(Some(e)),
            }
        });
        events::subscribe(
            "/events".into(),
            store.link,
            move |event| {
                if let Event::Job { job } = event {
                    store.upsert(*job);
                }
            },
            move || store.refresh(),
        );
        store
    }

    /// Reloads experiments and jobs (after a (re)connection or a change made here).
    pub fn refresh(self) {
        spawn_local(async move {
            let (exps, jobs) = (
                api::get::<Vec<Experiment>>("/experiments").await,
                api::get::<Vec<Job>>("/jobs").await,
            );
            match (exps, jobs) {
                (Ok(mut e), Ok(j)) => {
                    e.sort_by_key(|x| std::cmp::Reverse(x.id));
                    self.experiments.set(e);
                    self.jobs.set(j);
                    self.failure.set(None);
                }
                (Err(e), _) | (_, Err(e)) => self.failure.set(Some(e)),
            }
        });
    }

    /// Inserts or replaces a job, and fetches its experiment when it is new to us.
    pub fn upsert(self, job: Job) {
        let known = self
            .experiments
            .with_untracked(|e| e.iter().any(|x| x.id == job.experiment_id));
        self.jobs
            .update(|jobs| match jobs.iter_mut().find(|j| j.id == job.id) {
                Some(slot) => *slot = job,
                None => jobs.push(job),
            });
        if !known {
            self.refresh();
        }
    }

    /// Adds an experiment made here.
    pub fn add_experiment(self, exp: Experiment) {
        self.experiments.update(|list| {
            list.retain(|x| x.id != exp.id);
            list.insert(0, exp);
        });
    }

    /// The jobs of an experiment, oldest first.
    pub fn jobs_of(self, experiment: i64) -> Vec<Job> {
        let mut jobs: Vec<Job> = self.jobs.with(|all| {
            all.iter()
                .filter(|j| j.experiment_id == experiment)
                .cloned()
                .collect()
        });
        jobs.sort_by_key(|j| j.id);
        jobs
    }
}

/// The store from context.
pub fn use_store() -> Store {
    expect_context::<Store>()
}
