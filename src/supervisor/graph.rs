//! Dependency levels: level 0 has no dependencies, level n depends only on lower levels.
//! Launch goes up the levels, landing comes down them. Pure; the manifest has already
//! rejected unknown names and cycles.

use std::collections::HashMap;

use crate::manifest::Program;

/// Indices of `programs` grouped by dependency level. Programs caught in a cycle (which
/// a validated manifest cannot have) are put in a last level.
pub fn levels(programs: &[Program]) -> Vec<Vec<usize>> {
    let index: HashMap<String, usize> = programs
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.to_ascii_lowercase(), i))
        .collect();
    let deps: Vec<Vec<usize>> = programs
        .iter()
        .map(|p| {
            p.depends_on
                .iter()
                .filter_map(|d| index.get(&d.to_ascii_lowercase()).copied())
                .collect()
        })
        .collect();
    let mut level: Vec<Option<usize>> = vec![None; programs.len()];
    let mut changed = true;
    while changed {
        changed = false;
        for i in 0..programs.len() {
            if level[i].is_some() {
                continue;
            }
            let mut max = 0;
            let mut ready = true;
            for &d in &deps[i] {
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
