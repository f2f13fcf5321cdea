//! The running pumps: the lanes batches are dispatched to, swappable while
//! batches flow, and [`PumpSet`], which turns a config into that set on
//! start and on every reload (added / changed / kept / removed).
//!
//! The dispatcher takes a snapshot of the set for each batch, so a batch
//! goes to exactly one version of each pump. A lane dropped from the set
//! keeps its queue: it finishes the batches it was handed on its old
//! instances, then ends. A replacement lane for the same pump starts only
//! after its predecessor ended, so the two never deliver side by side (and
//! a disk-buffered pump's spool has one reader).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::lane::Lane;
use super::plugins::PluginCache;
use super::spec::PumpSpec;
use super::PumpError;
use crate::batch::{Batch, Form};
use crate::config::{Buffer, Config, DiskOptions, PumpConfig, WhenFull};
use crate::dlq::DeadLetters;
use crate::record::Schema;
use crate::runtime::Runtime;
use crate::spool::Spool;
use crate::status::{PumpState, PumpStatus, Status};

/// Where a disk-buffered lane's spool comes from.
pub enum SpoolSource {
    /// Opened already (at start, so a locked spool fails the start).
    Opened(Arc<Spool>),
    /// Opened by the lane's task once its predecessor ended (reload).
    Open {
        dir: PathBuf,
        max_bytes: u64,
        when_full: WhenFull,
    },
}

/// A lane as the dispatcher sees it.
#[derive(Clone)]
pub struct LaneHandle {
    pub name: Arc<str>,
    pub tx: mpsc::Sender<Arc<Batch>>,
    /// The form its first plugin reads batches in (`None`: a disk lane,
    /// which reads them back from its spool).
    pub form: Option<Form>,
}

/// The running lanes.
pub struct LaneSet {
    current: RwLock<Arc<Vec<LaneHandle>>>,
    /// Every lane task not yet joined, newest per pump under its name.
    tasks: Mutex<HashMap<Arc<str>, JoinHandle<()>>>,
    retired: Mutex<Vec<JoinHandle<()>>>,
    /// Where lanes hand finished batches; dropped at close so the acker
    /// ends once the last lane has.
    done: Mutex<Option<mpsc::UnboundedSender<Arc<Batch>>>>,
    schema: Schema,
}

/// The receiving end of finished batches, for the acker.
pub type Finished = mpsc::UnboundedReceiver<Arc<Batch>>;

impl LaneSet {
    pub fn new(schema: Schema) -> (Arc<LaneSet>, Finished) {
        let (done, finished) = mpsc::unbounded_channel();
        let set = LaneSet {
            current: RwLock::new(Arc::new(Vec::new())),
            tasks: Mutex::new(HashMap::new()),
            retired: Mutex::new(Vec::new()),
            done: Mutex::new(Some(done)),
            schema,
        };
        (Arc::new(set), finished)
    }

    /// A sender for finished batches (`None` once closed).
    pub fn finished_sender(&self) -> Option<mpsc::UnboundedSender<Arc<Batch>>> {
        self.done.lock().expect("lane set lock").clone()
    }

    /// The encoded forms the current lanes will ask batches for, each once:
    /// made while decoding, on the blocking pool, several batches in
    /// parallel, instead of in the first lane that asks for them.
    pub fn wanted_forms(&self) -> Vec<Form> {
        let mut forms: Vec<Form> = Vec::new();
        for f in self.snapshot().iter().filter_map(|l| l.form) {
            if !forms.contains(&f) {
                forms.push(f);
            }
        }
        forms
    }

    /// The lanes a batch is dispatched to now.
    pub fn snapshot(&self) -> Arc<Vec<LaneHandle>> {
        self.current.read().expect("lane set lock").clone()
    }

    /// The handle of a running pump, to keep it across a reload.
    pub fn handle(&self, name: &str) -> Option<LaneHandle> {
        self.snapshot().iter().find(|h| &*h.name == name).cloned()
    }

    /// Starts a pump's `lanes` (its workers, at least one) on one queue
    /// of `cap` batches. If lanes of the same pump are running, the new
    /// ones start once those have finished.
    pub fn spawn(
        &self,
        mut lanes: Vec<Lane>,
        cap: usize,
        spool: Option<SpoolSource>,
        status: Arc<PumpStatus>,
    ) -> LaneHandle {
        let lane = lanes.remove(0);
        let name = lane.name();
        crate::telemetry::register_pump(&name);
        let form = spool.is_none().then(|| lane.first_form());
        let (tx, rx) = mpsc::channel(cap);
        let before = self.tasks.lock().expect("lane set lock").remove(&name);
        let done = self.finished_sender();
        let schema = self.schema;
        let pump = name.clone();
        let task = tokio::spawn(async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            let lane = match spool {
                None => lane,
                Some(SpoolSource::Opened(s)) => lane.with_spool(s, schema),
                Some(SpoolSource::Open {
                    dir,
                    max_bytes,
                    when_full,
                }) => {
                    let s = open_spool(&pump, dir, max_bytes, when_full, &status).await;
                    lane.with_spool(s, schema)
                }
            };
            if let Some(done) = done {
                if lanes.is_empty() {
                    lane.run(rx, done).await;
                } else {
                    // Workers take turns at the one queue; each batch goes
                    // to exactly one of them.
                    let rx = Arc::new(tokio::sync::Mutex::new(rx));
                    let workers = std::iter::once(lane).chain(lanes).map(|l| {
                        let (rx, done) = (rx.clone(), done.clone());
                        tokio::spawn(l.run_shared(rx, done))
                    });
                    for w in workers.collect::<Vec<_>>() {
                        let _ = w.await;
                    }
                }
            }
        });
        self.tasks
            .lock()
            .expect("lane set lock")
            .insert(name.clone(), task);
        LaneHandle { name, tx, form }
    }

    /// Makes `lanes` the set batches go to. Lanes left out finish their
    /// queues and end.
    pub fn install(&self, lanes: Vec<LaneHandle>) {
        let keep: Vec<Arc<str>> = lanes.iter().map(|l| l.name.clone()).collect();
        *self.current.write().expect("lane set lock") = Arc::new(lanes);
        // Tasks of pumps no longer configured are joined at shutdown.
        let mut tasks = self.tasks.lock().expect("lane set lock");
        let gone: Vec<Arc<str>> = tasks
            .keys()
            .filter(|k| !keep.contains(k))
            .cloned()
            .collect();
        let mut retired = self.retired.lock().expect("lane set lock");
        for k in gone {
            if let Some(t) = tasks.remove(&k) {
                retired.push(t);
            }
        }
        retired.retain(|t| !t.is_finished());
    }

    /// Closes every lane's queue and waits for all lane tasks to finish.
    pub async fn close_and_join(&self) {
        self.install(Vec::new());
        self.done.lock().expect("lane set lock").take();
        let tasks: Vec<JoinHandle<()>> = {
            let mut retired = self.retired.lock().expect("lane set lock");
            let mut tasks = self.tasks.lock().expect("lane set lock");
            retired
                .drain(..)
                .chain(tasks.drain().map(|(_, t)| t))
                .collect()
        };
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Opens a spool for a lane started by a reload, retrying while the file
/// is unavailable (the pump shows as failing meanwhile).
async fn open_spool(
    pump: &Arc<str>,
    dir: PathBuf,
    max_bytes: u64,
    when_full: WhenFull,
    status: &PumpStatus,
) -> Arc<Spool> {
    loop {
        let (d, p) = (dir.clone(), pump.clone());
        match tokio::task::spawn_blocking(move || Spool::open(&d, &p, max_bytes, when_full)).await {
            Ok(Ok(s)) => return Arc::new(s),
            Ok(Err(e)) => {
                tracing::error!(pump = &**pump, "cannot open the spool, retrying in 5s: {e}");
                status.set(PumpState::Fatal {
                    error: e.to_string(),
                });
            }
            Err(e) => tracing::error!(pump = &**pump, "spool task failed: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// When [`PumpSet::apply`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The daemon's start: spools are opened here, so a locked one fails it.
    Start,
    /// A hot reload: lanes of changed pumps open their spools once their
    /// predecessors have ended.
    Reload,
}

/// What a start or reload changed, by pump name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub kept: Vec<String>,
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        write!(
            f,
            "added: {}; changed: {}; removed: {}; unchanged: {}",
            list(&self.added),
            list(&self.changed),
            list(&self.removed),
            list(&self.kept)
        )
    }
}

/// What a pump runs, to tell a changed pump from an unchanged one.
struct Running {
    config: PumpConfig,
    /// SHA-256 of the sink and of each filter plugin, in order.
    plugins: Vec<String>,
    status: Arc<PumpStatus>,
}

/// A lane started for an added or changed pump, not yet swapped in.
struct Fresh {
    /// One lane per `workers`.
    lanes: Vec<Lane>,
    status: Arc<PumpStatus>,
    plugins: Vec<String>,
}

/// Owns the running pumps and applies configs to them as transactions.
pub struct PumpSet {
    runtime: Runtime,
    cache: PluginCache,
    lanes: Arc<LaneSet>,
    status: Arc<Status>,
    dead_letters: DeadLetters,
    running: HashMap<String, Running>,
}

impl PumpSet {
    pub fn new(
        runtime: Runtime,
        cache: PluginCache,
        lanes: Arc<LaneSet>,
        status: Arc<Status>,
        dead_letters: DeadLetters,
    ) -> PumpSet {
        PumpSet {
            runtime,
            cache,
            lanes,
            status,
            dead_letters,
            running: HashMap::new(),
        }
    }

    /// Makes `config`'s pumps the running set. Every added or changed pump
    /// is compiled, started and `init`ed first; any failure leaves the
    /// running set untouched.
    pub async fn apply(&mut self, config: &Config, phase: Phase) -> Result<Diff, PumpError> {
        let specs = PumpSpec::build_all(config, &self.runtime, &mut self.cache).await?;
        let mut fresh: HashMap<String, Fresh> = HashMap::new();
        let mut opened: HashMap<String, Arc<Spool>> = HashMap::new();
        let mut order = Vec::with_capacity(specs.len());
        for spec in specs {
            let p = spec.config.clone();
            order.push(p.clone());
            let plugins = spec.plugin_hashes();
            if let Some(r) = self.running.get(&p.name) {
                if r.config == p && r.plugins == plugins {
                    continue;
                }
            }
            let status = spec.status.clone();
            let spec = Arc::new(spec);
            let mut lanes = Vec::with_capacity(p.workers);
            for _ in 0..p.workers {
                lanes.push(Lane::start(spec.clone(), self.dead_letters.clone(), phase).await?);
            }
            if let (Phase::Start, Buffer::Disk(disk)) = (phase, p.buffer) {
                let spool = open_spool_now(config, &p.name, disk).await?;
                opened.insert(p.name.clone(), Arc::new(spool));
            }
            fresh.insert(
                p.name.clone(),
                Fresh {
                    lanes,
                    status,
                    plugins,
                },
            );
        }
        // Commit: nothing below can fail.
        let mut handles = Vec::with_capacity(order.len());
        let mut statuses = Vec::with_capacity(order.len());
        let mut running = HashMap::new();
        let mut diff = Diff::default();
        for p in &order {
            let name = &p.name;
            match fresh.remove(name) {
                Some(f) => {
                    let spool = match (p.buffer, opened.remove(name)) {
                        (Buffer::Memory, _) => None,
                        (Buffer::Disk(_), Some(s)) => Some(SpoolSource::Opened(s)),
                        (Buffer::Disk(disk), None) => Some(SpoolSource::Open {
                            dir: config.spool_dir.clone(),
                            max_bytes: disk.max_spool_bytes.as_u64(),
                            when_full: disk.when_full,
                        }),
                    };
                    if self.running.contains_key(name) {
                        diff.changed.push(name.clone());
                    } else {
                        diff.added.push(name.clone());
                    }
                    handles.push(self.lanes.spawn(
                        f.lanes,
                        p.max_in_flight_batches,
                        spool,
                        f.status.clone(),
                    ));
                    statuses.push(f.status.clone());
                    running.insert(
                        name.clone(),
                        Running {
                            config: p.clone(),
                            plugins: f.plugins,
                            status: f.status,
                        },
                    );
                }
                None => {
                    let r = self
                        .running
                        .remove(name)
                        .expect("unchanged pumps are running");
                    handles.push(self.lanes.handle(name).expect("running pumps have lanes"));
                    statuses.push(r.status.clone());
                    diff.kept.push(name.clone());
                    running.insert(name.clone(), r);
                }
            }
        }
        diff.removed = self
            .running
            .keys()
            .filter(|k| !running.contains_key(*k))
            .cloned()
            .collect();
        diff.removed.sort();
        self.lanes.install(handles);
        self.status.set_pumps(statuses);
        self.running = running;
        Ok(diff)
    }
}

/// Opens a disk pump's spool at start (on the blocking pool: redb reads
/// and checks the file).
async fn open_spool_now(
    config: &Config,
    pump: &str,
    disk: DiskOptions,
) -> Result<Spool, PumpError> {
    let (dir, name) = (config.spool_dir.clone(), pump.to_string());
    let (max, when_full) = (disk.max_spool_bytes.as_u64(), disk.when_full);
    tokio::task::spawn_blocking(move || Spool::open(&dir, &name, max, when_full))
        .await
        .map_err(|e| PumpError::SpoolTask(e.to_string()))?
        .map_err(|source| PumpError::Spool {
            pump: pump.to_string(),
            source: Box::new(source),
        })
}
