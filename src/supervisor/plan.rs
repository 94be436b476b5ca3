//! The fleet's lifecycle as pure decisions: given the phase and how each program stands
//! (through [`View`]), which program to act on next ([`next_launch`], [`next_landing`]) and
//! where the fleet goes next ([`next_phase`]). The supervisor applies each decision (which
//! changes a program's state or the phase) and asks again, so a decision always sees the
//! effects of the ones before it, exactly as the programs' machines produced them.
//! Tested below with a fleet on paper, a clock that only moves when told, and no
//! processes.

use std::time::Instant;

use super::child::{State, Then};

/// The fleet's phases, in the order it goes through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Flagship election on its worker thread: waiting for this instance's rank (and, as
    /// an escort, for the flagship's `ready`).
    Electing,
    Prelaunch,
    Launching,
    Running,
    Landing,
    /// PID 1 only: waiting for every remaining descendant.
    Reaping,
    Done,
}

/// What the phase decisions need to know besides the programs.
#[derive(Clone, Copy, Debug)]
pub struct Facts {
    pub now: Instant,
    /// An HTTP edge serves beside the fleet.
    pub serving: bool,
    /// Landing waits for the edge's requests in flight until then.
    pub drain_until: Option<Instant>,
    /// The edge's requests in flight; [`NOT_COUNTED`] until the edge has counted them
    /// since its listeners closed.
    pub edge_busy: usize,
    /// Mothership is PID 1: its descendants are reaped before it ends.
    pub pid1: bool,
    /// Processes are left in the namespace (PID 1).
    pub children_left: bool,
}

/// `Facts::edge_busy` before the edge has counted: landing waits for the count.
pub const NOT_COUNTED: usize = usize::MAX;

/// Where the fleet goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Every prelaunch job completed: launch the programs (`n` of them).
    Launch { n: usize },
    /// Every program came up or ended: the fleet runs.
    Running {
        up: usize,
        ended: usize,
        failed: usize,
    },
    /// Nothing is left to run: land.
    Land(&'static str),
    /// Landing: wait for the edge's requests in flight.
    Drain,
    /// Landing: the drain is over (`late` requests were still in flight at its end).
    DrainOver { late: usize },
    /// Landing is over: wait for the remaining descendants (PID 1).
    Reap,
    /// The fleet has landed.
    Done,
}

/// How the planner sees the fleet. Indexes are those of the supervisor's members.
pub trait View {
    fn count(&self) -> usize;
    fn prelaunch(&self, i: usize) -> bool;
    fn state(&self, i: usize) -> &State;
    /// Up, or a job that completed successfully: its dependents may start.
    fn satisfies_dependents(&self, i: usize) -> bool;
    /// What `i` waits for.
    fn deps(&self, i: usize) -> &[usize];
    /// What waits for `i`.
    fn dependents(&self, i: usize) -> &[usize];
    /// It has been up since the fleet started.
    fn was_up(&self, i: usize) -> bool;
    /// A one-shot job.
    fn oneshot(&self, i: usize) -> bool;
}

/// What to do with one program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Its dependencies are satisfied: start it.
    Start(usize),
    /// A dependency failed for good: it can never start.
    DependencyFailed { member: usize, dependency: usize },
    /// It waits for these (to be said once).
    Waits { member: usize, on: Vec<usize> },
    /// Landing: stop it (its dependents are down, or it is down and must stay so).
    Stop(usize),
}

fn is_down(s: &State) -> bool {
    matches!(
        s,
        State::Waiting
            | State::Backoff { .. }
            | State::Done { .. }
            | State::Failed { .. }
            | State::Held
    )
}

/// During launch: the next decision about a waiting program of the set `prelaunch`, at
/// index `from` or later, with the index to go on from.
pub fn next_launch(v: &impl View, prelaunch: bool, from: usize) -> Option<(Decision, usize)> {
    for i in from..v.count() {
        if v.prelaunch(i) != prelaunch || *v.state(i) != State::Waiting {
            continue;
        }
        let blocking: Vec<usize> = v
            .deps(i)
            .iter()
            .copied()
            .filter(|&d| !v.satisfies_dependents(d))
            .collect();
        if blocking.is_empty() {
            return Some((Decision::Start(i), i + 1));
        }
        if let Some(&d) = blocking
            .iter()
            .find(|&&d| matches!(v.state(d), State::Failed { .. }))
        {
            return Some((
                Decision::DependencyFailed {
                    member: i,
                    dependency: d,
                },
                i + 1,
            ));
        }
        return Some((
            Decision::Waits {
                member: i,
                on: blocking,
            },
            i + 1,
        ));
    }
    None
}

/// During landing: the next program to stop, at index `from` or later. A program stops
/// once everything that depends on it is down; one that is down already (waiting, in
/// backoff) is stopped so that it never starts again.
pub fn next_landing(v: &impl View, from: usize) -> Option<(Decision, usize)> {
    for i in from..v.count() {
        let s = v.state(i);
        if is_down(s) {
            if !matches!(s, State::Done { .. } | State::Failed { .. } | State::Held) {
                return Some((Decision::Stop(i), i + 1));
            }
            continue;
        }
        let dependents_down = v.dependents(i).iter().all(|&d| is_down(v.state(d)));
        // A program stopping for a restart is told to stay down afterwards.
        let stays_down = matches!(
            s,
            State::Stopping {
                then: Then::Stay,
                ..
            }
        );
        if dependents_down && !stays_down {
            return Some((Decision::Stop(i), i + 1));
        }
    }
    None
}

/// Waiting for a program the operator stopped, directly or through others: launching
/// cannot bring it up, so the launch is over without it.
fn held_back(v: &impl View, i: usize, depth: usize) -> bool {
    // The graph has no cycles (the manifest is checked); the bound is for safety.
    depth < 64
        && *v.state(i) == State::Waiting
        && v.deps(i)
            .iter()
            .any(|&d| matches!(v.state(d), State::Held) || held_back(v, d, depth + 1))
}

/// Every program is down: landing is over.
pub fn all_down(v: &impl View) -> bool {
    (0..v.count()).all(|i| is_down(v.state(i)))
}

/// Where the fleet goes from `phase`, once the launch or landing decisions of this round
/// have been applied; `None`: it stays. During landing, ask again after each transition
/// (drain over, then landing over).
pub fn next_phase(v: &impl View, phase: Phase, f: &Facts) -> Option<Transition> {
    let programs = || (0..v.count()).filter(|&i| !v.prelaunch(i));
    let ended = |i: usize| matches!(v.state(i), State::Done { .. });
    let failed = |i: usize| matches!(v.state(i), State::Failed { .. });
    // Stopped by the operator: settled, but neither ended nor failed (a fleet whose
    // programs are all stopped waits to be told what next).
    let held = |i: usize| matches!(v.state(i), State::Held);
    match phase {
        Phase::Electing | Phase::Done => None,
        Phase::Prelaunch => {
            let complete = (0..v.count())
                .filter(|&i| v.prelaunch(i))
                .all(|i| v.satisfies_dependents(i));
            complete.then(|| Transition::Launch {
                n: programs().count(),
            })
        }
        Phase::Launching | Phase::Running => {
            // A manifest without programs but with an edge (static files, metrics) serves
            // until it is told to land.
            let settled = programs()
                .all(|i| v.was_up(i) || failed(i) || ended(i) || held(i) || held_back(v, i, 0));
            if phase == Phase::Launching && settled {
                return Some(Transition::Running {
                    up: programs()
                        .filter(|&i| v.satisfies_dependents(i) && !v.oneshot(i))
                        .count(),
                    ended: programs().filter(|&i| ended(i)).count(),
                    failed: programs().filter(|&i| failed(i)).count(),
                });
            }
            let serving_only = programs().next().is_none() && f.serving;
            (!serving_only && programs().all(|i| ended(i) || failed(i)))
                .then_some(Transition::Land("every program has ended"))
        }
        Phase::Landing => {
            if let Some(until) = f.drain_until {
                if f.edge_busy == NOT_COUNTED || (f.edge_busy > 0 && f.now < until) {
                    return Some(Transition::Drain);
                }
                return Some(Transition::DrainOver { late: f.edge_busy });
            }
            if !all_down(v) {
                return None;
            }
            Some(if f.pid1 {
                Transition::Reap
            } else {
                Transition::Done
            })
        }
        Phase::Reaping => (!f.children_left).then_some(Transition::Done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::child::ExitInfo;
    use std::time::Instant;

    /// A fleet on paper: states, dependencies, and whether each is a prelaunch job.
    struct Paper {
        states: Vec<State>,
        pre: Vec<bool>,
        deps: Vec<Vec<usize>>,
        dependents: Vec<Vec<usize>>,
        was_up: Vec<bool>,
    }

    impl Paper {
        fn new(deps: &[&[usize]]) -> Paper {
            let n = deps.len();
            let mut dependents = vec![Vec::new(); n];
            for (i, ds) in deps.iter().enumerate() {
                for &d in ds.iter() {
                    dependents[d].push(i);
                }
            }
            Paper {
                states: vec![State::Waiting; n],
                pre: vec![false; n],
                deps: deps.iter().map(|d| d.to_vec()).collect(),
                dependents,
                was_up: vec![false; n],
            }
        }

        fn running(i: usize) -> State {
            State::Running {
                pid: 100 + i as i32,
                since: Instant::now(),
            }
        }

        /// Applies decisions as the supervisor does until none is left; returns them.
        /// Starting puts a program straight to running; stopping a running one puts it
        /// in `Stopping` (its exit comes later), a down one in `Done`.
        fn launch(&mut self) -> Vec<Decision> {
            let mut out = Vec::new();
            let mut from = 0;
            while let Some((d, next)) = next_launch(self, false, from) {
                match &d {
                    Decision::Start(i) => self.states[*i] = Self::running(*i),
                    Decision::DependencyFailed { member, .. } => {
                        self.states[*member] = State::Failed {
                            reason: "dependency".into(),
                        }
                    }
                    _ => {}
                }
                out.push(d);
                from = next;
            }
            out
        }

        fn land_pass(&mut self) -> Vec<usize> {
            let mut out = Vec::new();
            let mut from = 0;
            while let Some((Decision::Stop(i), next)) = next_landing(self, from) {
                self.states[i] = if is_down(&self.states[i]) {
                    State::Done { exit: None }
                } else {
                    State::Stopping {
                        pid: 1,
                        leader: true,
                        killed: false,
                        then: crate::supervisor::child::Then::Stay,
                    }
                };
                out.push(i);
                from = next;
            }
            out
        }
    }

    impl View for Paper {
        fn count(&self) -> usize {
            self.states.len()
        }
        fn prelaunch(&self, i: usize) -> bool {
            self.pre[i]
        }
        fn state(&self, i: usize) -> &State {
            &self.states[i]
        }
        fn satisfies_dependents(&self, i: usize) -> bool {
            match &self.states[i] {
                State::Running { .. } => true,
                State::Done { exit: Some(e) } => e.success(),
                _ => false,
            }
        }
        fn deps(&self, i: usize) -> &[usize] {
            &self.deps[i]
        }
        fn dependents(&self, i: usize) -> &[usize] {
            &self.dependents[i]
        }
        fn was_up(&self, i: usize) -> bool {
            self.was_up[i] || matches!(self.states[i], State::Running { .. })
        }
        fn oneshot(&self, i: usize) -> bool {
            self.pre[i]
        }
    }

    #[test]
    fn launch_goes_by_levels() {
        // 0 db; 1 cache; 2 web needs db and cache; 3 worker needs web.
        let mut f = Paper::new(&[&[], &[], &[0, 1], &[2]]);
        f.states[1] = State::Starting {
            pid: 1,
            since: Instant::now(),
            probes: 0,
            deadline: Instant::now(),
        };
        // db starts; cache is starting already; web waits for cache; worker for web.
        assert_eq!(
            f.launch(),
            vec![
                Decision::Start(0),
                Decision::Waits {
                    member: 2,
                    on: vec![1]
                },
                Decision::Waits {
                    member: 3,
                    on: vec![2]
                },
            ]
        );
        f.states[1] = Paper::running(1);
        assert_eq!(f.launch(), vec![Decision::Start(2), Decision::Start(3)]);
        assert_eq!(f.launch(), vec![]);
    }

    #[test]
    fn a_failed_dependency_fails_the_whole_chain_in_one_pass() {
        let mut f = Paper::new(&[&[], &[0], &[1]]);
        f.states[0] = State::Failed {
            reason: "boom".into(),
        };
        assert_eq!(
            f.launch(),
            vec![
                Decision::DependencyFailed {
                    member: 1,
                    dependency: 0
                },
                Decision::DependencyFailed {
                    member: 2,
                    dependency: 1
                },
            ]
        );
    }

    #[test]
    fn a_job_that_completed_counts_only_when_it_succeeded() {
        let mut f = Paper::new(&[&[], &[0]]);
        f.states[0] = State::Done {
            exit: Some(ExitInfo::Code(3)),
        };
        assert!(matches!(
            f.launch()[..],
            [Decision::Waits { member: 1, .. }]
        ));
        f.states[0] = State::Done {
            exit: Some(ExitInfo::Code(0)),
        };
        assert_eq!(f.launch(), vec![Decision::Start(1)]);
    }

    #[test]
    fn prelaunch_jobs_and_programs_are_planned_apart() {
        let mut f = Paper::new(&[&[], &[]]);
        f.pre[0] = true;
        assert_eq!(next_launch(&f, true, 0), Some((Decision::Start(0), 1)));
        assert_eq!(next_launch(&f, false, 0), Some((Decision::Start(1), 2)));
        assert_eq!(next_launch(&f, true, 1), None);
    }

    #[test]
    fn landing_goes_in_reverse_dependency_order() {
        // 0 db; 1 web needs db; 2 worker needs web; 3 report (waiting, never started).
        let mut f = Paper::new(&[&[], &[0], &[1], &[]]);
        for i in 0..3 {
            f.states[i] = Paper::running(i);
        }
        // The worker stops first, and the one that never started is made to stay down.
        assert_eq!(f.land_pass(), vec![2, 3]);
        assert_eq!(f.land_pass(), vec![], "web waits until the worker is down");
        f.states[2] = State::Done { exit: None };
        assert_eq!(f.land_pass(), vec![1]);
        f.states[1] = State::Done { exit: None };
        assert_eq!(f.land_pass(), vec![0]);
        assert!(!all_down(&f));
        f.states[0] = State::Done { exit: None };
        assert!(all_down(&f));
        assert_eq!(f.land_pass(), vec![]);
    }

    #[test]
    fn a_program_in_backoff_is_stopped_at_once_and_frees_its_dependencies() {
        // 1 needs 0; 1 crashed and waits in backoff: 0 may stop in the same pass.
        let mut f = Paper::new(&[&[], &[0]]);
        f.states[0] = Paper::running(0);
        f.states[1] = State::Backoff {
            until: Instant::now(),
        };
        assert_eq!(f.land_pass(), vec![0, 1]);
    }

    #[test]
    fn a_program_recycling_when_landing_begins_is_told_to_stay_down() {
        let mut f = Paper::new(&[&[], &[0]]);
        f.states[0] = Paper::running(0);
        f.states[1] = State::Stopping {
            pid: 2,
            leader: true,
            killed: false,
            then: Then::Start,
        };
        assert_eq!(f.land_pass(), vec![1], "the recycle becomes a stop");
        assert_eq!(f.land_pass(), vec![], "asked once; 0 waits for it");
    }

    fn facts(now: Instant) -> Facts {
        Facts {
            now,
            serving: false,
            drain_until: None,
            edge_busy: 0,
            pid1: false,
            children_left: false,
        }
    }

    #[test]
    fn the_fleet_goes_through_its_phases() {
        let t0 = Instant::now();
        let f0 = facts(t0);
        // 0 a prelaunch job; 1 web; 2 worker (a job).
        let mut f = Paper::new(&[&[], &[], &[1]]);
        f.pre[0] = true;
        assert_eq!(next_phase(&f, Phase::Electing, &f0), None);
        assert_eq!(next_phase(&f, Phase::Prelaunch, &f0), None, "the job runs");
        f.states[0] = State::Done {
            exit: Some(ExitInfo::Code(0)),
        };
        assert_eq!(
            next_phase(&f, Phase::Prelaunch, &f0),
            Some(Transition::Launch { n: 2 })
        );
        f.states[1] = Paper::running(1);
        assert_eq!(next_phase(&f, Phase::Launching, &f0), None, "2 not up yet");
        f.states[2] = State::Failed {
            reason: "crashed".into(),
        };
        assert_eq!(
            next_phase(&f, Phase::Launching, &f0),
            Some(Transition::Running {
                up: 1,
                ended: 0,
                failed: 1
            })
        );
        assert_eq!(next_phase(&f, Phase::Running, &f0), None);
        f.states[1] = State::Done {
            exit: Some(ExitInfo::Code(0)),
        };
        assert_eq!(
            next_phase(&f, Phase::Running, &f0),
            Some(Transition::Land("every program has ended"))
        );
        assert_eq!(next_phase(&f, Phase::Landing, &f0), Some(Transition::Done));
        let pid1 = Facts {
            pid1: true,
            children_left: true,
            ..f0
        };
        assert_eq!(
            next_phase(&f, Phase::Landing, &pid1),
            Some(Transition::Reap)
        );
        assert_eq!(next_phase(&f, Phase::Reaping, &pid1), None);
        let reaped = Facts {
            children_left: false,
            ..pid1
        };
        assert_eq!(
            next_phase(&f, Phase::Reaping, &reaped),
            Some(Transition::Done)
        );
    }

    #[test]
    fn landing_waits_for_requests_in_flight_until_the_drain_ends() {
        let t0 = Instant::now();
        let until = t0 + std::time::Duration::from_secs(10);
        let mut f = Paper::new(&[&[]]);
        f.states[0] = Paper::running(0);
        let busy = Facts {
            serving: true,
            drain_until: Some(until),
            edge_busy: 3,
            ..facts(t0)
        };
        assert_eq!(
            next_phase(&f, Phase::Landing, &busy),
            Some(Transition::Drain)
        );
        let uncounted = Facts {
            now: until,
            edge_busy: NOT_COUNTED,
            ..busy
        };
        assert_eq!(
            next_phase(&f, Phase::Landing, &uncounted),
            Some(Transition::Drain),
            "nothing is decided before the edge has counted"
        );
        let idle = Facts {
            edge_busy: 0,
            ..busy
        };
        assert_eq!(
            next_phase(&f, Phase::Landing, &idle),
            Some(Transition::DrainOver { late: 0 })
        );
        let late = Facts { now: until, ..busy };
        assert_eq!(
            next_phase(&f, Phase::Landing, &late),
            Some(Transition::DrainOver { late: 3 }),
            "the clock reached the end of the drain"
        );
        let drained = Facts {
            drain_until: None,
            ..late
        };
        assert_eq!(next_phase(&f, Phase::Landing, &drained), None, "0 still up");
    }

    #[test]
    fn an_edge_without_programs_serves_until_told_to_land() {
        let f = Paper::new(&[]);
        let serving = Facts {
            serving: true,
            ..facts(Instant::now())
        };
        assert_eq!(
            next_phase(&f, Phase::Launching, &serving),
            Some(Transition::Running {
                up: 0,
                ended: 0,
                failed: 0
            })
        );
        assert_eq!(next_phase(&f, Phase::Running, &serving), None);
        assert_eq!(
            next_phase(&f, Phase::Running, &facts(Instant::now())),
            Some(Transition::Land("every program has ended"))
        );
    }

    #[test]
    fn programs_the_operator_stopped_neither_end_nor_fail_the_fleet() {
        let mut f = Paper::new(&[&[], &[0]]);
        f.states = vec![State::Held, State::Held];
        let now = Instant::now();
        // All stopped: the fleet runs on (launch is settled), waiting to be told.
        assert!(matches!(
            next_phase(&f, Phase::Launching, &facts(now)),
            Some(Transition::Running {
                up: 0,
                ended: 0,
                failed: 0
            })
        ));
        assert_eq!(next_phase(&f, Phase::Running, &facts(now)), None);
        // One stopped and the other ended: still no landing.
        f.states[1] = State::Done { exit: None };
        assert_eq!(next_phase(&f, Phase::Running, &facts(now)), None);
        // Landing passes over them and is over at once.
        assert!(f.land_pass().iter().all(|&i| i == 1));
        assert!(all_down(&f));
        // A stopped dependency holds back what depends on it.
        f.states[1] = State::Waiting;
        assert_eq!(
            f.launch(),
            vec![Decision::Waits {
                member: 1,
                on: vec![0]
            }]
        );
        // ... and the launch is over without waiting for it.
        assert!(matches!(
            next_phase(&f, Phase::Launching, &facts(now)),
            Some(Transition::Running { .. })
        ));
    }
}
