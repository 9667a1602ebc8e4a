//! Reading what the real `kubectl` prints.

/// The rows of a `kubectl get` table, header first, cut at the columns of its header (a column
/// starts where a word follows two or more spaces; an empty cell is "").
pub fn rows(table: &str) -> Vec<Vec<String>> {
    let mut lines = table.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let mut starts = vec![0];
    let bytes = header.as_bytes();
    for i in 2..bytes.len() {
        if bytes[i] != b' ' && bytes[i - 1] == b' ' && bytes[i - 2] == b' ' {
            starts.push(i);
        }
    }
    let cut = |line: &str| -> Vec<String> {
        (0..starts.len())
            .map(|c| {
                let end = starts
                    .get(c + 1)
                    .copied()
                    .unwrap_or(line.len())
                    .min(line.len());
                line.get(starts[c].min(end)..end)
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            })
            .collect()
    };
    std::iter::once(header).chain(lines).map(cut).collect()
}

#[cfg(test)]
mod tests {
    use super::rows;

    #[test]
    fn cells_are_cut_at_the_header_columns_and_empty_cells_stay() {
        let table = concat!(
            "NAME   PHASE     STEP   AGE\n",
            "a      Running   40     5s\n",
            "long             7      1m\n",
        );
        assert_eq!(
            rows(table),
            vec![
                vec!["NAME", "PHASE", "STEP", "AGE"],
                vec!["a", "Running", "40", "5s"],
                vec!["long", "", "7", "1m"],
            ]
        );
        assert!(rows("").is_empty());
    }
}
