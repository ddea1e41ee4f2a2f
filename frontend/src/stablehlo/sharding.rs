//! StableHLO's sharding annotations read into tsr shardings, and written back: Shardy's
//! `#sdy.sharding<@mesh, [{"x"}, {}]>` over an `sdy.mesh @mesh = <["x"=2, "y"=2]>`, and GSPMD's
//! `mhlo.sharding` strings (`{replicated}`, `{devices=[2,1]0,1}`, `{devices=[2,1,2]<=[4]
//! last_tile_dim_replicate}`).
//!
//! A GSPMD tile assignment names devices, not mesh axes; tessera reads one whose devices are in
//! order (`0,1,...` or `<=[n]`) as a mesh with one axis per tile count above 1, named `d0`,
//! `d1`, ... in order (the replicated last tile dimension included), so every tiled annotation
//! of a module must tile the devices the same way. Forms with no tsr sharding (a value on one
//! device, manual or tuple shardings, devices out of order, Shardy sub-axes, priorities,
//! unreduced axes, inline meshes) are errors naming the form.

use super::syntax::Attr;
use tessera_ir::graph::Graph;
use tessera_ir::sharding::{IoShardings, Mesh, Sharding};

/// One boundary annotation as written: which value, and the attribute.
enum Annotation<'a> {
    Sdy(&'a str),
    Mhlo(&'a str),
}

/// The annotation of one argument or result's attribute dictionary (Shardy's first).
fn annotation(dict: Option<&Attr>) -> Option<Annotation<'_>> {
    let Some(Attr::Dict(entries)) = dict else { return None };
    let find = |key: &str| entries.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    match (find("sdy.sharding"), find("mhlo.sharding")) {
        (Some(Attr::Opaque(text)), _) => Some(Annotation::Sdy(text)),
        (_, Some(Attr::Str(text))) => Some(Annotation::Mhlo(text)),
        _ => None,
    }
}

/// Reads `@main`'s argument and result shardings (`arg_attrs`, `res_attrs`) over the module's
/// `sdy.mesh`es (name, axes text) into `graph`'s [`IoShardings`]. Every annotation must name
/// one mesh (one Shardy mesh, or one GSPMD device grid); replicated-only modules record nothing.
pub fn read_io_shardings(
    graph: &mut Graph,
    meshes: &[(String, String)],
    arg_attrs: &[Attr],
    res_attrs: &[Attr],
) -> Result<(), String> {
    let mut annotations = Vec::new();
    for (i, &v) in graph.inputs().iter().enumerate() {
        if let Some(a) = annotation(arg_attrs.get(i)) {
            annotations.push((Some(graph.value(v).name.clone()), i, graph.value(v).ty.rank(), a));
        }
    }
    for (i, &v) in graph.outputs().iter().enumerate() {
        if let Some(a) = annotation(res_attrs.get(i)) {
            annotations.push((None, i, graph.value(v).ty.rank(), a));
        }
    }
    let mut mesh: Option<(String, Mesh)> = None;
    let mut read = Vec::new();
    for (input, index, rank, a) in annotations {
        let what = match &input {
            Some(name) => format!("argument %{name}"),
            None => format!("result {index}"),
        };
        let (key, sharding) = match a {
            Annotation::Sdy(text) => {
                let (mesh_name, sharding) = parse_sdy_sharding(text).map_err(|e| format!("{what}: {e}"))?;
                let Some((_, axes)) = meshes.iter().find(|(n, _)| *n == mesh_name) else {
                    return Err(format!("{what}: {text} names @{mesh_name}, which no sdy.mesh defines"));
                };
                let m = parse_sdy_mesh(axes)?;
                (Some((format!("@{mesh_name}"), m)), sharding)
            }
            Annotation::Mhlo(text) => {
                let parsed = parse_mhlo_sharding(text).map_err(|e| format!("{what}: {e}"))?;
                let grid = parsed.grid();
                let key = if grid.is_empty() {
                    None
                } else {
                    let m = mhlo_mesh(&grid).map_err(|e| format!("{what}: mhlo.sharding \"{text}\": {e}"))?;
                    Some((format!("the device grid {grid:?}"), m))
                };
                (key, parsed.to_sharding(rank))
            }
        };
        if sharding.dims.len() != rank {
            return Err(format!(
                "{what}: sharding {sharding} has {} dimensions, the value {rank}",
                sharding.dims.len()
            ));
        }
        if let Some((name, m)) = key {
            match &mesh {
                Some((first, _)) if *first != name => {
                    return Err(format!(
                    "{what}: sharded over {name}, another annotation over {first}; tessera reads one mesh per module"
                ))
                }
                Some(_) => {}
                None => mesh = Some((name, m)),
            }
        }
        read.push((input, index, sharding));
    }
    let Some((_, mesh)) = mesh else { return Ok(()) };
    let mut io = IoShardings { mesh, inputs: Vec::new(), outputs: Vec::new() };
    for (input, index, sharding) in read {
        match input {
            Some(name) => io.inputs.push((name, sharding)),
            None => io.outputs.push((index, sharding)),
        }
    }
    graph.set_io_shardings(Some(io));
    Ok(())
}

/// Reads the axes of `sdy.mesh`: `["x"=2, "y"=2]`, bare or inside `#sdy.mesh<...>`.
pub fn parse_sdy_mesh(text: &str) -> Result<Mesh, String> {
    let inner = text.trim();
    let inner = inner.strip_prefix("#sdy.mesh<").and_then(|s| s.strip_suffix('>')).unwrap_or(inner).trim();
    if inner.contains("device_ids") {
        return Err(format!("sdy.mesh <{inner}>: device_ids (devices out of order) have no tsr mesh"));
    }
    let Some(list) = inner.strip_prefix('[').and_then(|s| s.strip_suffix(']')) else {
        return Err(format!("sdy.mesh <{inner}>: tessera reads meshes of named axes only (no device_ids)"));
    };
    let mut axes: Vec<(String, u64)> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parsed = item.split_once('=').and_then(|(name, size)| {
            let name = name.trim().strip_prefix('"')?.strip_suffix('"')?;
            Some((name.to_string(), size.trim().parse::<u64>().ok()?))
        });
        match parsed {
            Some(axis) => axes.push(axis),
            None => return Err(format!("sdy.mesh axis '{item}' is not of the form \"name\"=size")),
        }
    }
    if axes.is_empty() {
        return Err("sdy.mesh has no axes (a maximal mesh); tsr meshes have at least one".into());
    }
    let pairs: Vec<(&str, u64)> = axes.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    Mesh::new(&pairs).map_err(|e| format!("sdy.mesh: {e}"))
}

/// Reads `#sdy.sharding<@mesh, [{"x"}, {}]>` (a dimension may be open, `{"x", ?}`, which reads
/// as the axes it names; `replicated={...}` axes replicate, as unnamed axes do). Returns the
/// mesh's name and the sharding.
pub fn parse_sdy_sharding(text: &str) -> Result<(String, Sharding), String> {
    let form = || format!("sdy.sharding {text}");
    let inner = text
        .trim()
        .strip_prefix("#sdy.sharding<")
        .and_then(|s| s.strip_suffix('>'))
        .ok_or_else(|| format!("{}: expected #sdy.sharding<@mesh, [...]>", form()))?;
    let Some(rest) = inner.trim().strip_prefix('@') else {
        return Err(format!("{}: an inline mesh has no tsr sharding; name an sdy.mesh (@mesh)", form()));
    };
    let (mesh_name, rest) = rest.split_once(',').ok_or_else(|| format!("{}: expected a dimension list", form()))?;
    let rest = rest.trim();
    let close = rest.find(']').ok_or_else(|| format!("{}: the dimension list has no ']'", form()))?;
    let (dims_text, tail) = (rest[..close].trim_start_matches('[').trim(), rest[close + 1..].trim());
    if let Some(extra) = tail.strip_prefix(',') {
        let extra = extra.trim();
        if !extra.starts_with("replicated=") {
            return Err(format!("{}: '{extra}' has no tsr sharding (tessera reads replicated= only)", form()));
        }
    }
    let mut dims = Vec::new();
    if !dims_text.is_empty() {
        for dim in dims_text.split('}').map(str::trim).filter(|d| !d.is_empty()) {
            let dim = dim.trim_start_matches(',').trim();
            let Some(axes_text) = dim.strip_prefix('{') else {
                return Err(format!("{}: dimension '{dim}}}' has no tsr form (priorities are not read)", form()));
            };
            let mut axes = Vec::new();
            for axis in axes_text.split(',').map(str::trim).filter(|a| !a.is_empty() && *a != "?") {
                if axis.contains(':') {
                    return Err(format!("{}: sub-axis {axis} has no tsr sharding", form()));
                }
                let name = axis
                    .strip_prefix('"')
                    .and_then(|a| a.strip_suffix('"'))
                    .ok_or_else(|| format!("{}: axis {axis} is not a quoted name", form()))?;
                axes.push(name.to_string());
            }
            dims.push(axes);
        }
    }
    let sharding = Sharding { dims, partial: None };
    let used: Vec<&String> = sharding.used_axes().collect();
    if let Some((_, a)) = used.iter().enumerate().find(|(i, a)| used[..*i].contains(a)) {
        return Err(format!("{}: axis '{a}' is used twice", form()));
    }
    Ok((mesh_name.trim().to_string(), sharding))
}

/// A GSPMD sharding tessera can read: replicated, or tiled over devices in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MhloSharding {
    Replicated,
    /// Tile counts per tensor dimension, and the trailing replication count (1 when absent).
    Tiled {
        tiles: Vec<u64>,
        replicate: u64,
    },
}

impl MhloSharding {
    /// The device grid this sharding implies: the tile counts above 1, in order.
    pub fn grid(&self) -> Vec<u64> {
        match self {
            MhloSharding::Replicated => Vec::new(),
            MhloSharding::Tiled { tiles, replicate } => {
                tiles.iter().chain(std::iter::once(replicate)).copied().filter(|&t| t > 1).collect()
            }
        }
    }

    /// The tsr sharding over the mesh of [`mhlo_mesh`] for this sharding's grid.
    pub fn to_sharding(&self, rank: usize) -> Sharding {
        match self {
            MhloSharding::Replicated => Sharding::replicated(rank),
            MhloSharding::Tiled { tiles, .. } => {
                let mut next_axis = 0;
                let dims = tiles
                    .iter()
                    .map(|&t| {
                        if t > 1 {
                            next_axis += 1;
                            vec![format!("d{}", next_axis - 1)]
                        } else {
                            Vec::new()
                        }
                    })
                    .collect();
                Sharding { dims, partial: None }
            }
        }
    }
}

/// The mesh tessera reads a GSPMD device grid as: axes `d0`, `d1`, ... of the grid's sizes.
pub fn mhlo_mesh(grid: &[u64]) -> Result<Mesh, String> {
    let names: Vec<String> = (0..grid.len()).map(|i| format!("d{i}")).collect();
    let pairs: Vec<(&str, u64)> = names.iter().map(String::as_str).zip(grid.iter().copied()).collect();
    Mesh::new(&pairs)
}

/// Reads an `mhlo.sharding` string.
pub fn parse_mhlo_sharding(text: &str) -> Result<MhloSharding, String> {
    let form = || format!("mhlo.sharding \"{text}\"");
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .ok_or_else(|| format!("{}: expected '{{...}}'", form()))?
        .trim();
    if inner == "replicated" {
        return Ok(MhloSharding::Replicated);
    }
    if inner.starts_with("maximal") {
        return Err(format!(
            "{}: a value on one device has no tsr sharding (tsr shardings split or replicate over a mesh)",
            form()
        ));
    }
    if inner == "manual" || inner.starts_with('{') || inner.starts_with("unknown") {
        return Err(format!("{}: manual, unknown and tuple shardings have no tsr sharding", form()));
    }
    let Some(rest) = inner.strip_prefix("devices=[") else {
        return Err(format!("{}: expected replicated, maximal or devices=[...]", form()));
    };
    let (tiles_text, rest) = rest.split_once(']').ok_or_else(|| format!("{}: the tile counts have no ']'", form()))?;
    let mut tiles = tiles_text
        .split(',')
        .map(|t| t.trim().parse::<u64>().ok().filter(|&t| t > 0))
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(|| format!("{}: tile counts must be positive integers", form()))?;
    let (devices_text, flags) = match rest.split_once(' ') {
        Some((d, f)) => (d.trim(), f.trim()),
        None => (rest.trim(), ""),
    };
    let replicate_last = match flags {
        "" => false,
        "last_tile_dim_replicate" => true,
        other => return Err(format!("{}: '{other}' has no tsr sharding", form())),
    };
    let devices: u64 = tiles.iter().product();
    let in_order = if let Some(iota) = devices_text.strip_prefix("<=[") {
        iota.strip_suffix(']').and_then(|n| n.trim().parse::<u64>().ok()) == Some(devices)
    } else {
        let listed: Option<Vec<u64>> = devices_text.split(',').map(|d| d.trim().parse().ok()).collect();
        listed.is_some_and(|l| l.len() as u64 == devices && l.iter().enumerate().all(|(i, &d)| d == i as u64))
    };
    if !in_order {
        return Err(format!(
            "{}: devices '{devices_text}' are not the {devices} devices in order, which tessera needs to name mesh axes",
            form()
        ));
    }
    let replicate = if replicate_last { tiles.pop().unwrap_or(1) } else { 1 };
    Ok(MhloSharding::Tiled { tiles, replicate })
}

/// Writes `sharding` as Shardy's `#sdy.sharding<@mesh, [...]>`.
pub fn sdy_sharding_text(mesh_name: &str, sharding: &Sharding) -> String {
    let dims: Vec<String> = sharding
        .dims
        .iter()
        .map(|axes| format!("{{{}}}", axes.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ")))
        .collect();
    format!("#sdy.sharding<@{mesh_name}, [{}]>", dims.join(", "))
}

/// Writes `mesh` as the body of `sdy.mesh @name = <...>`.
pub fn sdy_mesh_text(mesh: &Mesh) -> String {
    let axes: Vec<String> = mesh.axes().iter().map(|a| format!("\"{}\"={}", a.name, a.size)).collect();
    format!("[{}]", axes.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdy_shardings_read_their_axes_and_write_back_the_same_text() {
        let text = r#"#sdy.sharding<@mesh, [{"x"}, {}, {"y", "z"}]>"#;
        let (mesh, sharding) = parse_sdy_sharding(text).expect("sharding");
        assert_eq!(mesh, "mesh");
        assert_eq!(sharding.to_string(), "[{x}, {}, {y, z}]");
        assert_eq!(sdy_sharding_text("mesh", &sharding), text);
        let open = parse_sdy_sharding(r#"#sdy.sharding<@m, [{"x", ?}, {?}], replicated={"y"}>"#).expect("open");
        assert_eq!(open.1.to_string(), "[{x}, {}]");
        let mesh = parse_sdy_mesh(r#"["x"=2, "y"=4]"#).expect("mesh");
        assert_eq!(mesh.to_string(), "x=2,y=4");
        assert_eq!(sdy_mesh_text(&mesh), r#"["x"=2, "y"=4]"#);
    }

    #[test]
    fn sdy_forms_without_a_tsr_sharding_are_named_in_the_error() {
        let err = |t: &str| parse_sdy_sharding(t).expect_err(t);
        assert!(err(r#"#sdy.sharding<@m, [{"x":(1)2}, {}]>"#).contains("sub-axis \"x\":(1)2"));
        assert!(err(r#"#sdy.sharding<@m, [{"x"}p1, {}]>"#).contains("priorities"));
        assert!(err(r#"#sdy.sharding<@m, [{"x"}, {}], unreduced={"y"}>"#).contains("unreduced"));
        assert!(err(r#"#sdy.sharding<mesh<["x"=2]>, [{"x"}]>"#).contains("inline mesh"));
        assert!(err(r#"#sdy.sharding<@m, [{"x"}, {"x"}]>"#).contains("used twice"));
        assert!(parse_sdy_mesh(r#"["x"=2], device_ids=[1, 0]"#).expect_err("ids").contains("device_ids"));
    }

    #[test]
    fn mhlo_shardings_read_as_a_device_grid() {
        assert_eq!(parse_mhlo_sharding("{replicated}"), Ok(MhloSharding::Replicated));
        let tiled = parse_mhlo_sharding("{devices=[2,1]0,1}").expect("tiled");
        assert_eq!(tiled, MhloSharding::Tiled { tiles: vec![2, 1], replicate: 1 });
        assert_eq!(tiled.grid(), vec![2]);
        assert_eq!(tiled.to_sharding(2).to_string(), "[{d0}, {}]");
        let partly = parse_mhlo_sharding("{devices=[1,2,2]<=[4] last_tile_dim_replicate}").expect("replicate");
        assert_eq!(partly.grid(), vec![2, 2]);
        assert_eq!(partly.to_sharding(2).to_string(), "[{}, {d0}]");
        assert_eq!(mhlo_mesh(&partly.grid()).expect("mesh").to_string(), "d0=2,d1=2");
    }

    #[test]
    fn mhlo_forms_without_a_tsr_sharding_are_named_in_the_error() {
        let err = |t: &str| parse_mhlo_sharding(t).expect_err(t);
        assert!(err("{maximal device=0}").contains("\"{maximal device=0}\": a value on one device"));
        assert!(err("{devices=[2,1]1,0}").contains("not the 2 devices in order"));
        assert!(err("{devices=[2,2]<=[2,2]T(1,0)}").contains("not the 4 devices in order"));
        assert!(err("{manual}").contains("manual"));
        assert!(err("{devices=[2,1]0,1 last_tile_dims={manual}}").contains("has no tsr sharding"));
    }
}
