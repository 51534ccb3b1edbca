//! Upstream services: where the proxy sends a matched request, and how it keeps track of them.
//!
//! Every service of the replicated state has one long-lived [`Service`], kept across router
//! recompiles for as long as the service exists. Its targets are the spec's `targets` followed
//! by the instances registered for it (`PUT /services/{svc}/instances/{id}`), which come and go
//! through Raft; targets named by DNS are resolved by a background task (module `dns`). From
//! these the service builds a pool: one endpoint per target address, a balancer (module
//! `balance`) and the request settings of the spec. A request loads the current pool with one
//! lock-free read; the pool is rebuilt, off the request path, only when the spec, the target
//! list or a DNS answer changes. Instance heartbeats change neither, so they cost nothing here.
//!
//! Endpoint health (module `health`) and idle keep-alive connections (module `conn`) are kept by
//! (service, target URL, address) across rebuilds, so a target that stays keeps its verdict,
//! ejection, counters and open connections. How a request is sent,
//! timed out and retried is described in module `call`.
//!
//! [`HealthView`] shows this node's view of every target's health.

mod balance;
mod call;
mod conn;
mod dns;
mod h1;
mod health;
mod pool;
mod target;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use raftgate_model::api::UpstreamHealth;
use raftgate_model::state::Table;
use raftgate_model::{InstanceSpec, ServiceSpec, State};
use tokio::task::AbortHandle;
use tracing::warn;

pub(crate) use call::{UpstreamBody, UpstreamError};
pub(crate) use conn::Switched;
pub(crate) use pool::Pool;
pub(crate) use target::rewrite_path;

use call::RetryBudget;
use dns::{Name, Resolved};
use pool::Inputs;

/// The services of one state, by name.
pub type Services = BTreeMap<Arc<str>, Arc<Service>>;

/// One upstream service: its current pool and what keeps it up to date.
#[derive(Debug)]
pub struct Service {
    /// Service name, for logs and error messages.
    pub name: Arc<str>,
    pool: ArcSwap<Pool>,
    budget: Arc<RetryBudget>,
    /// Only touched off the request path: by state updates and the background tasks.
    inputs: Mutex<Inputs>,
    tasks: Mutex<Tasks>,
}

/// The background tasks of a service; aborted when it is dropped.
#[derive(Debug, Default)]
struct Tasks {
    dns: Option<AbortHandle>,
    active: Option<AbortHandle>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in [&self.dns, &self.active].into_iter().flatten() {
            task.abort();
        }
    }
}

/// Locks a mutex that only background code holds, briefly and without awaiting. A poisoned lock
/// is taken anyway: the worst a panic could leave behind is a stale pool input, which the next
/// state or DNS answer replaces, whereas refusing would stop all updates of the service.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Service {
    fn new(name: &str, spec: ServiceSpec, targets: Vec<(String, u32)>) -> Arc<Service> {
        let name: Arc<str> = name.into();
        let budget = Arc::new(RetryBudget::default());
        let mut inputs = Inputs {
            spec,
            targets,
            resolved: Resolved::new(),
            endpoints: HashMap::new(),
        };
        let pool = Pool::build(&name, &mut inputs, &budget);
        let service = Arc::new(Service {
            name,
            pool: ArcSwap::from_pointee(pool),
            budget,
            inputs: Mutex::new(inputs),
            tasks: Mutex::default(),
        });
        service.restart_tasks();
        service
    }

    /// The current pool; what a request forwards through.
    pub(crate) fn pool(&self) -> Arc<Pool> {
        self.pool.load_full()
    }

    /// Applies a new spec and target list; a no-op when neither changed.
    fn update(self: &Arc<Self>, spec: &ServiceSpec, targets: Vec<(String, u32)>) {
        {
            let mut inputs = lock(&self.inputs);
            if inputs.spec == *spec && inputs.targets == targets {
                return;
            }
            inputs.spec = spec.clone();
            inputs.targets = targets;
            self.rebuild(&mut inputs);
        }
        self.restart_tasks();
    }

    /// Applies DNS answers; rebuilds the pool only when an address list changed.
    fn resolved(&self, found: Resolved) {
        let mut inputs = lock(&self.inputs);
        let mut changed = false;
        for (name, addrs) in found {
            if inputs.resolved.get(&name) != Some(&addrs) {
                inputs.resolved.insert(name, addrs);
                changed = true;
            }
        }
        if changed {
            self.rebuild(&mut inputs);
        }
    }

    /// The DNS names among the targets and how often to resolve them.
    fn dns_names(&self) -> (Vec<Name>, Duration) {
        let inputs = lock(&self.inputs);
        let mut names: Vec<Name> = inputs
            .targets
            .iter()
            .filter(|(_, weight)| *weight > 0)
            .filter_map(|(url, _)| target::TargetUrl::parse(url))
            .filter(|t| t.ip.is_none())
            .map(|t| (t.host, t.port))
            .collect();
        names.sort_unstable();
        names.dedup();
        (names, Duration::from_millis(inputs.spec.dns_refresh_ms))
    }

    fn rebuild(&self, inputs: &mut Inputs) {
        // Forget answers for names no longer configured.
        let names = {
            let targets = inputs
                .targets
                .iter()
                .filter_map(|(url, _)| target::TargetUrl::parse(url));
            targets.map(|t| (t.host, t.port)).collect::<Vec<_>>()
        };
        inputs.resolved.retain(|name, _| names.contains(name));
        self.pool
            .store(Arc::new(Pool::build(&self.name, inputs, &self.budget)));
    }

    /// (Re)starts the DNS and active-check tasks the service needs, so that they pick up new
    /// settings and new names at once, and stops those it no longer needs.
    fn restart_tasks(self: &Arc<Self>) {
        let needs_dns = !self.dns_names().0.is_empty();
        let needs_active = self.pool().active().is_some();
        let mut tasks = lock(&self.tasks);
        // Dropping the old tasks aborts them.
        *tasks = Tasks::default();
        if !needs_dns && !needs_active {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            warn!(service = %self.name,
                "no async runtime: DNS resolution and active health checks are not running");
            return;
        };
        let weak = Arc::downgrade(self);
        if needs_dns {
            tasks.dns = Some(
                runtime
                    .spawn(dns::run_resolver(weak.clone()))
                    .abort_handle(),
            );
        }
        if needs_active {
            tasks.active = Some(
                runtime
                    .spawn(health::run_active_checks(weak))
                    .abort_handle(),
            );
        }
    }
}

/// Keeps one [`Service`] per service of the state; owned by the proxy's reload task.
#[derive(Debug)]
pub(crate) struct Upstreams {
    published: Arc<ArcSwap<Services>>,
    /// The tables last synced, to skip states that change neither.
    seen: Option<(Table<ServiceSpec>, Table<InstanceSpec>)>,
}

impl Upstreams {
    /// No services yet; [`Upstreams::sync`] adds them.
    pub(crate) fn new() -> Upstreams {
        Upstreams {
            published: Arc::new(ArcSwap::from_pointee(Services::new())),
            seen: None,
        }
    }

    /// A handle on the health of the services, now and after future syncs.
    pub(crate) fn health_view(&self) -> HealthView {
        HealthView {
            services: self.published.clone(),
        }
    }

    /// Brings the services in line with `state`: new ones are created, changed ones rebuild
    /// their pools, removed ones are dropped (ending their background tasks). Returns the
    /// services to compile routes against.
    pub(crate) fn sync(&mut self, state: &State) -> Arc<Services> {
        if let Some((services, instances)) = &self.seen
            && Arc::ptr_eq(services, &state.services)
            && Arc::ptr_eq(instances, &state.instances)
        {
            return self.published.load_full();
        }
        self.seen = Some((state.services.clone(), state.instances.clone()));

        let mut instances: HashMap<&str, Vec<(String, u32)>> = HashMap::new();
        for i in state.instances.values() {
            instances
                .entry(i.spec.service.as_str())
                .or_default()
                .push((i.spec.url.clone(), i.spec.weight));
        }
        let current = self.published.load_full();
        let mut next = Services::new();
        for entity in state.services.values() {
            let spec = &entity.spec;
            let mut targets: Vec<(String, u32)> = spec
                .targets
                .iter()
                .map(|t| (t.url.clone(), t.weight))
                .collect();
            targets.extend(instances.remove(entity.name.as_str()).unwrap_or_default());
            let service = match current.get(entity.name.as_str()) {
                Some(service) => {
                    service.update(spec, targets);
                    service.clone()
                }
                None => Service::new(&entity.name, spec.clone(), targets),
            };
            next.insert(service.name.clone(), service);
        }
        let next = Arc::new(next);
        self.published.store(next.clone());
        next
    }
}

impl Drop for Upstreams {
    /// Lets go of the services, so their background tasks end even while a [`HealthView`]
    /// outlives the proxy.
    fn drop(&mut self) {
        self.published.store(Arc::new(Services::new()));
    }
}

/// A cheap, cloneable handle on this node's view of its upstream targets' health: per service,
/// each target address with its active-check verdict, ejection, failure counts and requests in
/// flight. Get it with [`crate::Proxy::health`] before serving; it follows every configuration
/// change and is empty once the proxy has stopped.
#[derive(Debug, Clone)]
pub struct HealthView {
    services: Arc<ArcSwap<Services>>,
}

impl HealthView {
    /// Every service, by name.
    pub fn all(&self) -> Vec<UpstreamHealth> {
        self.services
            .load()
            .values()
            .map(|s| s.pool().health())
            .collect()
    }

    /// One service; `None` when it does not exist.
    pub fn service(&self, name: &str) -> Option<UpstreamHealth> {
        self.services.load().get(name).map(|s| s.pool().health())
    }
}
