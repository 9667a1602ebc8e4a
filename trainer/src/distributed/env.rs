//! Where rank and world come from. The launchers this trainer runs under each describe the
//! world in their own environment variables; [`resolve`] reads them, in this order:
//!
//! 1. torchrun and Kubeflow PyTorchJob: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//!    `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`; with `TORCHELASTIC_USE_AGENT_STORE=True`
//!    the store is the agent's, and every rank connects to it as a client. `LOCAL_RANK` marks a
//!    worker that a launcher started; `RANK`/`WORLD_SIZE` without it come from a launcher that
//!    starts one process per pod, unless `PET_NPROC_PER_NODE` asks for several (PyTorchJob's
//!    `nprocPerNode`), and then this process is the node's agent (`PET_NNODES` nodes, node rank
//!    `PET_NODE_RANK` or `RANK`).
//! 2. Kubeflow Trainer v2: `PET_NNODES`, `PET_NPROC_PER_NODE`, `PET_NODE_RANK`,
//!    `PET_MASTER_ADDR`, `PET_MASTER_PORT` (a node).
//! 3. Vertex AI: `CLUSTER_SPEC`, JSON whose `cluster.workerpool0` holds the primary replica
//!    (node rank 0) and `cluster.workerpool1` the others (node rank 1 + `task.index`); the
//!    primary's `host:port` is the rendezvous address (`MASTER_PORT` overrides the port).
//! 4. Explicit flags ([`LaunchFlags`]).
//!
//! A node with several local processes is [`Launch::Node`]: its agent starts one worker per
//! process (see `launch`). A node with one process is itself the worker of rank = node rank.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{Error, Result};
use mtl_crds::contract::torchrun::{
    CLUSTER_SPEC, LOCAL_RANK, MASTER_ADDR, MASTER_PORT, PET_MASTER_ADDR, PET_MASTER_PORT,
    PET_NNODES, PET_NODE_RANK, PET_NPROC_PER_NODE, RANK, WORLD_SIZE,
};

/// torchrun's default rendezvous port.
pub const DEFAULT_MASTER_PORT: u16 = 29500;

/// Which launcher's convention described this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// torchrun, or a Kubeflow PyTorchJob pod (`RANK`, `WORLD_SIZE`, …).
    Torchrun,
    /// A Kubeflow PyTorchJob pod with several processes per pod.
    PyTorchJob,
    /// Kubeflow Trainer v2 (`PET_*`).
    KubeflowTrainer,
    /// Vertex AI (`CLUSTER_SPEC`).
    Vertex,
    /// This trainer's own flags.
    Flags,
}

/// One rank of a world: what a process needs to join the rendezvous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerEnv {
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    pub local_world_size: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// The store is hosted by a launcher's agent (every rank connects as a client); otherwise
    /// rank 0 hosts it.
    pub agent_store: bool,
    /// `TORCHELASTIC_RESTART_COUNT`: keys of an earlier round in a reused store are not read.
    pub restart: u32,
    pub launcher: Launcher,
}

/// A node that starts its own workers, one per local process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEnv {
    pub nnodes: usize,
    pub node_rank: usize,
    pub nproc_per_node: usize,
    pub master_addr: String,
    /// 0 on a single node: the agent picks a free port.
    pub master_port: u16,
    pub launcher: Launcher,
}

impl NodeEnv {
    pub fn world_size(&self) -> usize {
        self.nnodes * self.nproc_per_node
    }
}

/// What this process is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// The whole world: one process, no rendezvous.
    Single,
    /// One rank of a larger world.
    Worker(WorkerEnv),
    /// The agent of a node with several local workers.
    Node(NodeEnv),
}

/// The trainer's own flags, read when no launcher's environment says anything.
/// `nproc_per_node` also applies under a launcher that does not give it (Vertex, a PET_*
/// environment without `PET_NPROC_PER_NODE`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchFlags {
    pub nnodes: Option<usize>,
    pub node_rank: Option<usize>,
    pub nproc_per_node: Option<usize>,
    pub master_addr: Option<String>,
    pub master_port: Option<u16>,
}

/// Reads the process environment (see [`resolve`]).
pub fn from_process_env(flags: &LaunchFlags, visible_gpus: usize) -> Result<Launch> {
    resolve(&std::env::vars().collect(), flags, visible_gpus)
}

/// What this process is, from the launchers' environment variables `env` (in the order of
/// the module docs), then `flags`. `visible_gpus` is the default number of processes per node.
pub fn resolve(
    env: &BTreeMap<String, String>,
    flags: &LaunchFlags,
    visible_gpus: usize,
) -> Result<Launch> {
    let vars = Vars(env);
    let default_nproc = flags.nproc_per_node.unwrap_or(visible_gpus.max(1));
    if vars.has(LOCAL_RANK) || vars.has(RANK) || vars.has(WORLD_SIZE) {
        return torchrun(&vars, default_nproc, visible_gpus);
    }
    if vars.has(PET_NNODES) || vars.has(PET_NODE_RANK) || vars.has(PET_NPROC_PER_NODE) {
        return kubeflow_trainer(&vars, default_nproc, visible_gpus);
    }
    if let Some(spec) = vars.get(CLUSTER_SPEC) {
        return vertex(spec, &vars, default_nproc);
    }
    from_flags(flags, default_nproc)
}

/// The environment, read with errors that name the variable.
struct Vars<'a>(&'a BTreeMap<String, String>);

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn required(&self, name: &str, context: &str) -> Result<&str> {
        self.get(name)
            .ok_or_else(|| env_error(name, format!("not set ({context})")))
    }

    fn count(&self, name: &str) -> Result<Option<usize>> {
        self.get(name).map(|v| parse_count(name, v)).transpose()
    }

    fn port(&self, name: &str) -> Result<Option<u16>> {
        self.get(name).map(|v| parse_port(name, v)).transpose()
    }
}

fn env_error(var: &str, message: impl Into<String>) -> Error {
    Error::Env {
        var: var.to_string(),
        message: message.into(),
    }
}

fn parse_count(name: &str, value: &str) -> Result<usize> {
    value
        .trim()
        .parse()
        .map_err(|_| env_error(name, format!("{value:?} is not a non-negative integer")))
}

fn parse_port(name: &str, value: &str) -> Result<u16> {
    value
        .trim()
        .parse()
        .map_err(|_| env_error(name, format!("{value:?} is not a port (0 to 65535)")))
}

/// torchrun's `--nproc-per-node`: a count, or `gpu`/`auto` (the visible GPUs; `auto` falls
/// back to one process without GPUs).
fn parse_nproc(name: &str, value: &str, visible_gpus: usize) -> Result<usize> {
    let n = match value.trim() {
        "auto" => visible_gpus.max(1),
        "gpu" if visible_gpus == 0 => {
            return Err(env_error(name, "\"gpu\" asked for, but no GPU is visible"));
        }
        "gpu" => visible_gpus,
        other => other.parse().map_err(|_| {
            env_error(
                name,
                format!("{other:?} is neither a process count nor \"gpu\" or \"auto\""),
            )
        })?,
    };
    if n == 0 {
        return Err(env_error(name, "must be at least 1"));
    }
    Ok(n)
}

fn check_rank(
    rank_var: &str,
    rank: usize,
    size_var: &str,
    size: usize,
    size_what: &str,
) -> Result<()> {
    if size == 0 {
        return Err(env_error(size_var, "must be at least 1"));
    }
    if rank >= size {
        return Err(env_error(
            rank_var,
            format!("{rank} is not below {size_var}={size} ({size_what})"),
        ));
    }
    Ok(())
}

fn torchrun(vars: &Vars<'_>, default_nproc: usize, visible_gpus: usize) -> Result<Launch> {
    let pet_nproc = vars
        .get(PET_NPROC_PER_NODE)
        .map(|v| parse_nproc(PET_NPROC_PER_NODE, v, visible_gpus))
        .transpose()?;
    if !vars.has(LOCAL_RANK) && pet_nproc.is_some_and(|n| n > 1) {
        // A PyTorchJob pod with nprocPerNode > 1: this process starts the pod's workers.
        let nnodes = vars
            .count(PET_NNODES)?
            .ok_or_else(|| env_error(PET_NNODES, "not set (PyTorchJob with nprocPerNode)"))?;
        let (rank_var, node_rank) = match vars.count(PET_NODE_RANK)? {
            Some(r) => (PET_NODE_RANK, r),
            None => (RANK, vars.count(RANK)?.unwrap_or(0)),
        };
        check_rank(
            rank_var,
            node_rank,
            PET_NNODES,
            nnodes,
            "the number of nodes",
        )?;
        return node(
            nnodes,
            node_rank,
            pet_nproc.unwrap_or(default_nproc),
            master(vars, MASTER_ADDR, MASTER_PORT, nnodes)?,
            Launcher::PyTorchJob,
        );
    }
    let ctx = "torchrun/PyTorchJob sets RANK and WORLD_SIZE together";
    let rank = parse_count(RANK, vars.required(RANK, ctx)?)?;
    let world_size = parse_count(WORLD_SIZE, vars.required(WORLD_SIZE, ctx)?)?;
    check_rank(RANK, rank, WORLD_SIZE, world_size, "the number of ranks")?;
    let local_rank = vars.count(LOCAL_RANK)?.unwrap_or(0);
    let local_world_size = vars.count("LOCAL_WORLD_SIZE")?.unwrap_or(1);
    check_rank(
        LOCAL_RANK,
        local_rank,
        "LOCAL_WORLD_SIZE",
        local_world_size,
        "the ranks on this node",
    )?;
    if world_size == 1 {
        return Ok(Launch::Single);
    }
    let ctx = "the address of rank 0's rendezvous store";
    let master_addr = vars.required(MASTER_ADDR, ctx)?.to_string();
    let master_port = parse_port(MASTER_PORT, vars.required(MASTER_PORT, ctx)?)?;
    let agent_store = match vars.get("TORCHELASTIC_USE_AGENT_STORE") {
        None => false,
        Some("True") => true,
        Some("False") => false,
        Some(other) => {
            return Err(env_error(
                "TORCHELASTIC_USE_AGENT_STORE",
                format!("{other:?} is neither True nor False"),
            ));
        }
    };
    let restart = match vars.get("TORCHELASTIC_RESTART_COUNT") {
        None => 0,
        Some(v) => v.trim().parse().map_err(|_| {
            env_error(
                "TORCHELASTIC_RESTART_COUNT",
                format!("{v:?} is not a count"),
            )
        })?,
    };
    Ok(Launch::Worker(WorkerEnv {
        rank,
        world_size,
        local_rank,
        local_world_size,
        master_addr,
        master_port,
        agent_store,
        restart,
        launcher: Launcher::Torchrun,
    }))
}

fn kubeflow_trainer(vars: &Vars<'_>, default_nproc: usize, visible_gpus: usize) -> Result<Launch> {
    let nnodes = vars.count(PET_NNODES)?.unwrap_or(1);
    let node_rank = match vars.count(PET_NODE_RANK)? {
        Some(r) => r,
        None if nnodes == 1 => 0,
        None => return Err(env_error(PET_NODE_RANK, "not set (PET_NNODES > 1)")),
    };
    check_rank(
        PET_NODE_RANK,
        node_rank,
        PET_NNODES,
        nnodes,
        "the number of nodes",
    )?;
    let nproc = match vars.get(PET_NPROC_PER_NODE) {
        Some(v) => parse_nproc(PET_NPROC_PER_NODE, v, visible_gpus)?,
        None => default_nproc,
    };
    node(
        nnodes,
        node_rank,
        nproc,
        master(vars, PET_MASTER_ADDR, PET_MASTER_PORT, nnodes)?,
        Launcher::KubeflowTrainer,
    )
}

/// The rendezvous address from `addr_var`/`port_var`: required across nodes; on a single
/// node, 127.0.0.1 and a port the agent picks.
fn master(vars: &Vars<'_>, addr_var: &str, port_var: &str, nnodes: usize) -> Result<(String, u16)> {
    let addr = vars.get(addr_var).map(str::to_string);
    let port = vars.port(port_var)?;
    if nnodes == 1 {
        return Ok((
            addr.unwrap_or_else(|| "127.0.0.1".into()),
            port.unwrap_or(0),
        ));
    }
    let ctx = "the address of node 0 when there are several nodes";
    let addr = addr.ok_or_else(|| env_error(addr_var, format!("not set ({ctx})")))?;
    Ok((addr, port.unwrap_or(DEFAULT_MASTER_PORT)))
}

/// A node of `nnodes` with `nproc` local processes: its agent's work, or (one process) the
/// worker of rank `node_rank` itself.
fn node(
    nnodes: usize,
    node_rank: usize,
    nproc: usize,
    (master_addr, master_port): (String, u16),
    launcher: Launcher,
) -> Result<Launch> {
    if nproc == 1 && nnodes == 1 {
        return Ok(Launch::Single);
    }
    if nproc == 1 {
        if master_port == 0 {
            return Err(Error::Invalid(format!(
                "{launcher:?}: a rendezvous port is needed across {nnodes} nodes"
            )));
        }
        return Ok(Launch::Worker(WorkerEnv {
            rank: node_rank,
            world_size: nnodes,
            local_rank: 0,
            local_world_size: 1,
            master_addr,
            master_port,
            agent_store: false,
            restart: 0,
            launcher,
        }));
    }
    Ok(Launch::Node(NodeEnv {
        nnodes,
        node_rank,
        nproc_per_node: nproc,
        master_addr,
        master_port,
        launcher,
    }))
}

/// Vertex AI's `CLUSTER_SPEC` (the fields read here; Vertex sends more, e.g. `environment`,
/// `job`, `open_ports`).
#[derive(Debug, Deserialize)]
struct ClusterSpec {
    cluster: BTreeMap<String, Vec<String>>,
    task: ClusterTask,
}

#[derive(Debug, Deserialize)]
struct ClusterTask {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    index: usize,
}

fn vertex(spec: &str, vars: &Vars<'_>, default_nproc: usize) -> Result<Launch> {
    let bad = |message: String| env_error(CLUSTER_SPEC, message);
    let spec: ClusterSpec =
        serde_json::from_str(spec).map_err(|e| bad(format!("not Vertex AI's JSON: {e}")))?;
    let pool = |name: &str| spec.cluster.get(name).map_or(&[][..], Vec::as_slice);
    let (primary, workers) = (pool("workerpool0"), pool("workerpool1"));
    let [primary_addr] = primary else {
        return Err(bad(format!(
            "cluster.workerpool0 must hold exactly one replica (the primary), not {}",
            primary.len()
        )));
    };
    let node_rank = match spec.task.kind.as_str() {
        "workerpool0" if spec.task.index == 0 => 0,
        "workerpool1" if spec.task.index < workers.len() => 1 + spec.task.index,
        "workerpool0" | "workerpool1" => {
            return Err(bad(format!(
                "task.index {} is not a replica of cluster.{} ({} listed)",
                spec.task.index,
                spec.task.kind,
                pool(&spec.task.kind).len()
            )));
        }
        other => {
            return Err(bad(format!(
                "task.type {other:?} is not a training pool (workerpool0 or workerpool1)"
            )));
        }
    };
    let (host, port) = primary_addr.rsplit_once(':').ok_or_else(|| {
        bad(format!(
            "cluster.workerpool0[0] {primary_addr:?} is not host:port"
        ))
    })?;
    let port = match vars.port(MASTER_PORT)? {
        Some(p) => p,
        None => port.parse().map_err(|_| {
            bad(format!(
                "cluster.workerpool0[0] {primary_addr:?}: {port:?} is not a port"
            ))
        })?,
    };
    node(
        1 + workers.len(),
        node_rank,
        default_nproc,
        (host.to_string(), port),
        Launcher::Vertex,
    )
}

fn from_flags(flags: &LaunchFlags, nproc: usize) -> Result<Launch> {
    let nnodes = flags.nnodes.unwrap_or(1);
    let node_rank = flags.node_rank.unwrap_or(0);
    if nnodes == 0 {
        return Err(Error::Invalid("--nnodes must be at least 1".into()));
    }
    if node_rank >= nnodes {
        return Err(Error::Invalid(format!(
            "--node-rank {node_rank} is not below --nnodes {nnodes}"
        )));
    }
    if nproc == 0 {
        return Err(Error::Invalid("--nproc-per-node must be at least 1".into()));
    }
    let (addr, port) = if nnodes == 1 {
        (
            flags
                .master_addr
                .clone()
                .unwrap_or_else(|| "127.0.0.1".into()),
            flags.master_port.unwrap_or(0),
        )
    } else {
        let addr = flags.master_addr.clone().ok_or_else(|| {
            Error::Invalid(format!(
                "--master-addr is needed with --nnodes {nnodes} (the address of node 0)"
            ))
        })?;
        (addr, flags.master_port.unwrap_or(DEFAULT_MASTER_PORT))
    };
    node(nnodes, node_rank, nproc, (addr, port), Launcher::Flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn worker(launch: Launch) -> WorkerEnv {
        match launch {
            Launch::Worker(w) => w,
            other => panic!("expected a worker, got {other:?}"),
        }
    }

    fn node_of(launch: Launch) -> NodeEnv {
        match launch {
            Launch::Node(n) => n,
            other => panic!("expected a node, got {other:?}"),
        }
    }

    fn err(r: Result<Launch>) -> String {
        r.expect_err("expected an error").to_string()
    }

    const NONE: LaunchFlags = LaunchFlags {
        nnodes: None,
        node_rank: None,
        nproc_per_node: None,
        master_addr: None,
        master_port: None,
    };

    #[test]
    fn torchrun_worker() {
        let e = env(&[
            ("RANK", "5"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "4"),
            ("MASTER_ADDR", "job-0.svc"),
            ("MASTER_PORT", "29400"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ]);
        let w = worker(resolve(&e, &NONE, 4).unwrap());
        assert_eq!(
            w,
            WorkerEnv {
                rank: 5,
                world_size: 8,
                local_rank: 1,
                local_world_size: 4,
                master_addr: "job-0.svc".into(),
                master_port: 29400,
                agent_store: true,
                restart: 2,
                launcher: Launcher::Torchrun,
            }
        );
    }

    #[test]
    fn pytorchjob_pod_with_one_process_is_the_rank_itself() {
        let e = env(&[
            ("RANK", "2"),
            ("WORLD_SIZE", "3"),
            ("MASTER_ADDR", "j-master-0"),
            ("MASTER_PORT", "23456"),
            ("PET_NPROC_PER_NODE", "1"),
            ("PET_NNODES", "3"),
        ]);
        let w = worker(resolve(&e, &NONE, 0).unwrap());
        assert_eq!((w.rank, w.world_size, w.local_rank), (2, 3, 0));
        assert!(!w.agent_store);
    }

    #[test]
    fn pytorchjob_pod_with_several_processes_is_a_node() {
        let e = env(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "8"),
            ("MASTER_ADDR", "j-master-0"),
            ("MASTER_PORT", "23456"),
            ("PET_NPROC_PER_NODE", "4"),
            ("PET_NNODES", "2"),
        ]);
        let n = node_of(resolve(&e, &NONE, 4).unwrap());
        assert_eq!((n.nnodes, n.node_rank, n.nproc_per_node), (2, 1, 4));
        assert_eq!(
            (n.master_addr.as_str(), n.master_port),
            ("j-master-0", 23456)
        );
        assert_eq!(n.launcher, Launcher::PyTorchJob);
    }

    #[test]
    fn torchrun_errors_name_the_variable() {
        let base = [("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")];
        let mut e = env(&base);
        assert!(err(resolve(&e, &NONE, 0)).starts_with("MASTER_PORT: not set"));
        e.insert("MASTER_PORT".into(), "70000".into());
        assert_eq!(
            err(resolve(&e, &NONE, 0)),
            "MASTER_PORT: \"70000\" is not a port (0 to 65535)"
        );
        e.insert("MASTER_PORT".into(), "1".into());
        e.insert("RANK".into(), "2".into());
        assert_eq!(
            err(resolve(&e, &NONE, 0)),
            "RANK: 2 is not below WORLD_SIZE=2 (the number of ranks)"
        );
        e.insert("RANK".into(), "x".into());
        assert_eq!(
            err(resolve(&e, &NONE, 0)),
            "RANK: \"x\" is not a non-negative integer"
        );
        let e = env(&[("LOCAL_RANK", "0"), ("WORLD_SIZE", "2")]);
        assert!(err(resolve(&e, &NONE, 0)).starts_with("RANK: not set"));
        let e = env(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1"),
            ("TORCHELASTIC_USE_AGENT_STORE", "yes"),
        ]);
        assert_eq!(
            err(resolve(&e, &NONE, 0)),
            "TORCHELASTIC_USE_AGENT_STORE: \"yes\" is neither True nor False"
        );
    }

    #[test]
    fn a_world_of_one_needs_no_rendezvous() {
        let e = env(&[("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")]);
        assert_eq!(resolve(&e, &NONE, 0).unwrap(), Launch::Single);
        assert_eq!(resolve(&env(&[]), &NONE, 0).unwrap(), Launch::Single);
        assert_eq!(resolve(&env(&[]), &NONE, 1).unwrap(), Launch::Single);
    }

    #[test]
    fn kubeflow_trainer_node() {
        let e = env(&[
            ("PET_NNODES", "3"),
            ("PET_NPROC_PER_NODE", "gpu"),
            ("PET_NODE_RANK", "2"),
            ("PET_MASTER_ADDR", "train-node-0-0.train"),
            ("PET_MASTER_PORT", "29400"),
        ]);
        let n = node_of(resolve(&e, &NONE, 8).unwrap());
        assert_eq!(
            n,
            NodeEnv {
                nnodes: 3,
                node_rank: 2,
                nproc_per_node: 8,
                master_addr: "train-node-0-0.train".into(),
                master_port: 29400,
                launcher: Launcher::KubeflowTrainer,
            }
        );
        assert_eq!(n.world_size(), 24);
        // One process per node: this process is rank = node rank.
        let mut one = e.clone();
        one.insert("PET_NPROC_PER_NODE".into(), "1".into());
        let w = worker(resolve(&one, &NONE, 0).unwrap());
        assert_eq!((w.rank, w.world_size), (2, 3));
        assert_eq!(w.launcher, Launcher::KubeflowTrainer);
    }

    #[test]
    fn kubeflow_trainer_errors_name_the_variable() {
        let e = env(&[("PET_NNODES", "2"), ("PET_MASTER_ADDR", "h")]);
        assert_eq!(
            err(resolve(&e, &NONE, 1)),
            "PET_NODE_RANK: not set (PET_NNODES > 1)"
        );
        let e = env(&[("PET_NNODES", "2"), ("PET_NODE_RANK", "1")]);
        assert!(err(resolve(&e, &NONE, 2)).starts_with("PET_MASTER_ADDR: not set"));
        let e = env(&[("PET_NNODES", "1"), ("PET_NPROC_PER_NODE", "gpu")]);
        assert_eq!(
            err(resolve(&e, &NONE, 0)),
            "PET_NPROC_PER_NODE: \"gpu\" asked for, but no GPU is visible"
        );
        let e = env(&[("PET_NNODES", "1"), ("PET_NPROC_PER_NODE", "many")]);
        assert!(err(resolve(&e, &NONE, 0)).starts_with("PET_NPROC_PER_NODE: \"many\""));
    }

    fn cluster_spec(kind: &str, index: usize) -> String {
        serde_json::json!({
            "cluster": {
                "workerpool0": ["cmle-training-workerpool0-ab-0:2222"],
                "workerpool1": ["cmle-training-workerpool1-ab-0:2222",
                                "cmle-training-workerpool1-ab-1:2222"]
            },
            "environment": "cloud",
            "task": {"type": kind, "index": index, "trial": ""},
            "job": "{\"python_module\":\"\",\"package_uris\":[],\"job_args\":[]}",
            "open_ports": [3333]
        })
        .to_string()
    }

    #[test]
    fn vertex_cluster_spec() {
        let one_gpu = LaunchFlags {
            nproc_per_node: Some(1),
            ..NONE
        };
        let primary = env(&[("CLUSTER_SPEC", &cluster_spec("workerpool0", 0))]);
        let w = worker(resolve(&primary, &one_gpu, 0).unwrap());
        assert_eq!((w.rank, w.world_size), (0, 3));
        assert_eq!(
            (w.master_addr.as_str(), w.master_port),
            ("cmle-training-workerpool0-ab-0", 2222)
        );
        assert_eq!(w.launcher, Launcher::Vertex);
        let second = env(&[("CLUSTER_SPEC", &cluster_spec("workerpool1", 1))]);
        let w = worker(resolve(&second, &one_gpu, 0).unwrap());
        assert_eq!((w.rank, w.world_size), (2, 3));
        // Every GPU of a replica: a node of 4 processes.
        let n = node_of(resolve(&second, &NONE, 4).unwrap());
        assert_eq!((n.nnodes, n.node_rank, n.nproc_per_node), (3, 2, 4));
        // MASTER_PORT overrides the port of the primary's address.
        let mut e = second.clone();
        e.insert("MASTER_PORT".into(), "29500".into());
        assert_eq!(node_of(resolve(&e, &NONE, 2).unwrap()).master_port, 29500);
    }

    #[test]
    fn vertex_errors_name_the_field() {
        let e = env(&[("CLUSTER_SPEC", &cluster_spec("workerpool2", 0))]);
        assert_eq!(
            err(resolve(&e, &NONE, 1)),
            "CLUSTER_SPEC: task.type \"workerpool2\" is not a training pool (workerpool0 or workerpool1)"
        );
        let e = env(&[("CLUSTER_SPEC", &cluster_spec("workerpool1", 2))]);
        assert_eq!(
            err(resolve(&e, &NONE, 1)),
            "CLUSTER_SPEC: task.index 2 is not a replica of cluster.workerpool1 (2 listed)"
        );
        let e = env(&[("CLUSTER_SPEC", "{\"cluster\": {}}")]);
        assert!(err(resolve(&e, &NONE, 1)).starts_with("CLUSTER_SPEC: not Vertex AI's JSON"));
        let spec =
            r#"{"cluster": {"workerpool0": ["a:1", "b:1"]}, "task": {"type": "workerpool0"}}"#;
        let e = env(&[("CLUSTER_SPEC", spec)]);
        assert_eq!(
            err(resolve(&e, &NONE, 1)),
            "CLUSTER_SPEC: cluster.workerpool0 must hold exactly one replica (the primary), not 2"
        );
        let spec = r#"{"cluster": {"workerpool0": ["a"], "workerpool1": ["b:1"]}, "task": {"type": "workerpool0"}}"#;
        let e = env(&[("CLUSTER_SPEC", spec)]);
        assert_eq!(
            err(resolve(&e, &NONE, 1)),
            "CLUSTER_SPEC: cluster.workerpool0[0] \"a\" is not host:port"
        );
    }

    #[test]
    fn torchrun_comes_before_kubeflow_and_vertex() {
        let e = env(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "a"),
            ("MASTER_PORT", "1"),
            ("PET_NNODES", "4"),
            ("CLUSTER_SPEC", "not json"),
        ]);
        assert_eq!(
            worker(resolve(&e, &NONE, 0).unwrap()).launcher,
            Launcher::Torchrun
        );
        let e = env(&[("PET_NNODES", "1"), ("CLUSTER_SPEC", "not json")]);
        assert_eq!(resolve(&e, &NONE, 0).unwrap(), Launch::Single);
    }

    #[test]
    fn flags_and_visible_gpus() {
        // No launcher: one process per visible GPU on this node.
        let n = node_of(resolve(&env(&[]), &NONE, 4).unwrap());
        assert_eq!(
            n,
            NodeEnv {
                nnodes: 1,
                node_rank: 0,
                nproc_per_node: 4,
                master_addr: "127.0.0.1".into(),
                master_port: 0,
                launcher: Launcher::Flags,
            }
        );
        let flags = LaunchFlags {
            nnodes: Some(2),
            node_rank: Some(1),
            nproc_per_node: Some(2),
            master_addr: Some("node0".into()),
            master_port: None,
        };
        let n = node_of(resolve(&env(&[]), &flags, 0).unwrap());
        assert_eq!(
            (n.nnodes, n.node_rank, n.master_port),
            (2, 1, DEFAULT_MASTER_PORT)
        );
        let missing = LaunchFlags {
            master_addr: None,
            ..flags.clone()
        };
        assert!(err(resolve(&env(&[]), &missing, 0)).starts_with("--master-addr is needed"));
        let bad = LaunchFlags {
            node_rank: Some(2),
            ..flags
        };
        assert_eq!(
            err(resolve(&env(&[]), &bad, 0)),
            "--node-rank 2 is not below --nnodes 2"
        );
    }
}
