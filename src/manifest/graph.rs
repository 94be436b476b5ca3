//! The dependency graph of one set of programs (prelaunch jobs among themselves, ships and
//! bays among themselves), the one place where `depends_on` names become indexes: resolved
//! once, then cycles (the manifest check), levels (`chart`) and the supervisor's
//! dependency lists all come from the same edges. Pure.

use std::collections::{HashMap, HashSet};

use super::Program;

/// `edges[i]`: the indexes that program `i` depends on. Names match case-insensitively;
/// names not in the set (already reported by the manifest check) are left out.
pub fn resolve<'a, D>(names: &[&str], depends_on: &[D]) -> Vec<Vec<usize>>
where
    D: AsRef<[&'a str]>,
{
    let index: HashMap<String, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_ascii_lowercase(), i))
        .collect();
    depends_on
        .iter()
        .map(|ds| {
            ds.as_ref()
                .iter()
                .filter_map(|d| index.get(&d.to_ascii_lowercase()).copied())
                .collect()
        })
        .collect()
}

/// The resolved dependencies of a set of programs, as indexes for the walks below.
pub fn deps(programs: &[Program]) -> Vec<Vec<usize>> {
    programs
        .iter()
        .map(|p| p.deps.iter().map(|d| d.index()).collect())
        .collect()
}

/// [`resolve`] for parsed programs, by their `depends_on` names.
pub fn edges(programs: &[Program]) -> Vec<Vec<usize>> {
    let names: Vec<&str> = programs.iter().map(|p| p.name.as_str()).collect();
    let deps: Vec<Vec<&str>> = programs
        .iter()
        .map(|p| p.depends_on.iter().map(String::as_str).collect())
        .collect();
    resolve(&names, &deps)
}

/// Each cycle once: the programs on it in order, then the one that closes it (the first
/// again). Found by one depth-first walk.
pub fn cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    // 0 = unvisited, 1 = on the stack, 2 = done
    let mut state = vec![0u8; edges.len()];
    let mut reported: HashSet<Vec<usize>> = HashSet::new();
    let mut out = Vec::new();
    for start in 0..edges.len() {
        if state[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&to) = edges[node].get(*next) {
                *next += 1;
                match state[to] {
                    0 => {
                        state[to] = 1;
                        stack.push((to, 0));
                    }
                    1 if to != node => {
                        let pos = stack.iter().position(|(n, _)| *n == to).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[pos..].iter().map(|(n, _)| *n).collect();
                        let mut key = cycle.clone();
                        key.sort_unstable();
                        if reported.insert(key) {
                            cycle.push(to);
                            out.push(cycle);
                        }
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                stack.pop();
            }
        }
    }
    out
}

/// Indexes grouped by dependency level: level 0 depends on nothing, level n only on lower
/// levels. Launch goes up the levels, landing comes down them. Programs caught in a cycle
/// (which a checked manifest cannot have) are put in a last level.
pub fn levels(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let mut level: Vec<Option<usize>> = vec![None; n];
    let mut changed = true;
    while changed {
        changed = false;
        for i in 0..n {
            if level[i].is_some() {
                continue;
            }
            let mut max = 0;
            let mut ready = true;
            for &d in &edges[i] {
                match level[d] {
                    Some(l) => max = max.max(l + 1),
                    None => ready = false,
                }
            }
            if ready {
                level[i] = Some(max);
                changed = true;
            }
        }
    }
    let top = level.iter().flatten().max().map_or(0, |m| m + 1);
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); top];
    let mut stuck = Vec::new();
    for (i, l) in level.iter().enumerate() {
        match l {
            Some(l) => out[*l].push(i),
            None => stuck.push(i),
        }
    }
    if !stuck.is_empty() {
        out.push(stuck);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_case_insensitively_and_skips_unknown_names() {
        let e = resolve(
            &["db", "Web", "worker"],
            &[vec![], vec!["DB", "nope"], vec!["web", "db"]],
        );
        assert_eq!(e, vec![vec![], vec![0], vec![1, 0]]);
    }

    #[test]
    fn levels_and_cycles() {
        let e = vec![vec![], vec![0], vec![0, 1], vec![]];
        assert_eq!(levels(&e), vec![vec![0, 3], vec![1], vec![2]]);
        assert!(cycles(&e).is_empty());
        // 0 -> 1 -> 2 -> 0, and 3 on its own loop with 4; 5 depends on the first cycle.
        let e = vec![vec![1], vec![2], vec![0], vec![4], vec![3], vec![0]];
        assert_eq!(cycles(&e), vec![vec![0, 1, 2, 0], vec![3, 4, 3]]);
        assert_eq!(levels(&e), vec![vec![0, 1, 2, 3, 4, 5]]);
    }
}
