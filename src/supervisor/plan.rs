//! The fleet's launch and landing order as pure decisions: given how each program stands
//! (through [`View`]), which one to act on next. The supervisor applies each decision
//! (which changes the program's state) and asks again, so a decision always sees the
//! effects of the ones before it, exactly as the programs' machines produced them.
//! Tested below with a fake fleet and no processes.

use super::child::{State, Then};

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
        State::Waiting | State::Backoff { .. } | State::Done { .. } | State::Failed { .. }
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
            if !matches!(s, State::Done { .. } | State::Failed { .. }) {
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

/// Every program is down: landing is over.
pub fn all_down(v: &impl View) -> bool {
    (0..v.count()).all(|i| is_down(v.state(i)))
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
    }

    #[test]
    fn launch_goes_by_levels() {
        // 0 db; 1 cache; 2 web needs db and cache; 3 worker needs web.
        let mut f = Paper::new(&[&[], &[], &[0, 1], &[2]]);
        f.states[1] = State::Starting {
            pid: 1,
            since: Instant::now(),
            probes: 0,
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
}
