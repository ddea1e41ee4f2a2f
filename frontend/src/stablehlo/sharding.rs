//! StableHLO's sharding annotations read into tsr shardings, and written back: Shardy's
//! `#sdy.sharding<@mesh, [{"x"}, {}]>` over an `sdy.mesh @mesh = <["x"=2, "y"=2]>`, and GSPMD's
//! `mhlo.sharding` strings (`{replicated}`, `{devices=[2,1]0,1}`, `{devices=[2,1,2]<=[4]
//! last_tile_dim_replicate}`).
//!
//! A GSPMD tile assignment names devices, not mesh axes; tessera reads the devices' order as a
//! mesh: each tile count splits into prime digits, each digit steps the device id by a fixed
//! stride, and sorting the digits by stride gives the mesh's axes `d0`, `d1`, ... (slowest
//! first; neighbouring digits of one tile dimension merge). So `<=[4]` in order, an iota with a
//! transpose (`<=[2,2]T(1,0)`: a dimension split over the faster axis `d1`) and an explicit list
//! in such an order all read, and every tiled annotation of a module must give the same mesh.
//! Forms with no tsr sharding (a value on one device, manual or tuple shardings, devices in no
//! mesh order, Shardy sub-axes, priorities, unreduced axes, inline meshes) are errors naming the
//! form.

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
                let key = parsed.mesh().map(|m| (format!("the device grid {m}"), m.clone()));
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

/// A GSPMD sharding tessera can read: replicated, or tiled over devices in an order a mesh of
/// named axes gives (any iota tile assignment `<=[dims]T(perm)`, or a device list in such an
/// order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MhloSharding {
    Replicated,
    /// The mesh the tile assignment's devices form (axes `d0`, `d1`, ... from the slowest-varying
    /// device id digit to the fastest), and the axes each tensor dimension is split over (major
    /// first); the replicated last tile dimension's axes split nothing.
    Tiled {
        mesh: Mesh,
        dims: Vec<Vec<String>>,
    },
}

impl MhloSharding {
    /// The mesh of a tiled sharding.
    pub fn mesh(&self) -> Option<&Mesh> {
        match self {
            MhloSharding::Replicated => None,
            MhloSharding::Tiled { mesh, .. } => Some(mesh),
        }
    }

    /// The tsr sharding of a value of rank `rank` over [`MhloSharding::mesh`].
    pub fn to_sharding(&self, rank: usize) -> Sharding {
        match self {
            MhloSharding::Replicated => Sharding::replicated(rank),
            MhloSharding::Tiled { dims, .. } => Sharding { dims: dims.clone(), partial: None },
        }
    }
}

/// The prime factors of `n`, smallest first.
fn prime_factors(mut n: u64) -> Vec<u64> {
    let mut factors = Vec::new();
    let mut p = 2;
    while p * p <= n {
        while n % p == 0 {
            factors.push(p);
            n /= p;
        }
        p += 1;
    }
    if n > 1 {
        factors.push(n);
    }
    factors
}

/// The devices of an iota tile assignment `<=[reshape]T(perm)` (or `<=[n]`): `0..n` reshaped,
/// transposed by `perm` and read in row-major order.
fn iota_devices(reshape: &[u64], perm: Option<&[usize]>) -> Result<Vec<u64>, String> {
    let n: u64 = reshape.iter().product();
    let identity: Vec<usize> = (0..reshape.len()).collect();
    let perm = perm.unwrap_or(&identity);
    let mut sorted = perm.to_vec();
    sorted.sort_unstable();
    if sorted != identity {
        return Err(format!("T{perm:?} is not a permutation of the {} reshape dimensions", reshape.len()));
    }
    let mut strides = vec![1u64; reshape.len()];
    for d in (0..reshape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * reshape[d + 1];
    }
    let shape: Vec<u64> = perm.iter().map(|&p| reshape[p]).collect();
    let mut devices = Vec::with_capacity(n as usize);
    for flat in 0..n {
        let mut rest = flat;
        let mut device = 0;
        for (d, &size) in shape.iter().enumerate().rev() {
            device += (rest % size) * strides[perm[d]];
            rest /= size;
        }
        devices.push(device);
    }
    Ok(devices)
}

/// The mesh and per-dimension axes of a tile assignment: `devices` holds the device of every
/// tile, row-major over `grid` (the tile counts, the replicated last dimension included). Each
/// grid dimension is split into prime digits; each digit must step the device id by a fixed
/// stride, and the strides must be a row-major numbering of the digits in some order: that order
/// is the mesh's (adjacent digits of one dimension in order merge into one axis).
fn tile_mesh(grid: &[u64], devices: &[u64]) -> Result<(Mesh, Vec<Vec<String>>), String> {
    let n: u64 = grid.iter().product();
    let mut seen = vec![false; n as usize];
    for &d in devices {
        match seen.get_mut(d as usize) {
            Some(s) if !*s => *s = true,
            _ => return Err(format!("the tile assignment is not the devices 0..{n} each once")),
        }
    }
    if devices.len() as u64 != n {
        return Err(format!("{} devices for {n} tiles", devices.len()));
    }
    // (grid dimension, size) of every digit, major first, and its stride among the tiles.
    let digits: Vec<(usize, u64)> = grid
        .iter()
        .enumerate()
        .flat_map(|(d, &size)| prime_factors(size).into_iter().rev().map(move |p| (d, p)))
        .collect();
    let mut tile_strides = vec![1u64; digits.len()];
    for k in (0..digits.len().saturating_sub(1)).rev() {
        tile_strides[k] = tile_strides[k + 1] * digits[k + 1].1;
    }
    let device_strides: Vec<u64> = tile_strides.iter().map(|&s| devices[s as usize]).collect();
    let mut order: Vec<usize> = (0..digits.len()).collect();
    order.sort_by_key(|&k| std::cmp::Reverse(device_strides[k]));
    let mut expected = 1;
    for &k in order.iter().rev() {
        if device_strides[k] != expected {
            return Err("no mesh of named axes numbers them in this order".into());
        }
        expected *= digits[k].1;
    }
    for (tile, &device) in devices.iter().enumerate() {
        let at: u64 =
            (0..digits.len()).map(|k| (tile as u64 / tile_strides[k]) % digits[k].1 * device_strides[k]).sum();
        if at != device {
            return Err("no mesh of named axes numbers them in this order".into());
        }
    }
    // Merge digits adjacent in the mesh that are adjacent digits of one dimension, in order.
    let mut axes: Vec<(usize, Vec<usize>, u64)> = Vec::new(); // (dimension, digits, size)
    for &k in &order {
        match axes.last_mut() {
            Some((d, ks, size)) if *d == digits[k].0 && k.checked_sub(1).is_some_and(|j| ks.last() == Some(&j)) => {
                ks.push(k);
                *size *= digits[k].1;
            }
            _ => axes.push((digits[k].0, vec![k], digits[k].1)),
        }
    }
    let names: Vec<String> = (0..axes.len()).map(|i| format!("d{i}")).collect();
    let pairs: Vec<(&str, u64)> = names.iter().map(String::as_str).zip(axes.iter().map(|a| a.2)).collect();
    let mesh = Mesh::new(&pairs)?;
    let mut dims: Vec<Vec<String>> = vec![Vec::new(); grid.len()];
    let mut by_digit: Vec<(usize, usize)> = axes.iter().enumerate().map(|(i, (_, ks, _))| (ks[0], i)).collect();
    by_digit.sort_unstable();
    for (_, i) in by_digit {
        dims[axes[i].0].push(names[i].clone());
    }
    Ok((mesh, dims))
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
    let mut grid = int_list(tiles_text)
        .filter(|t| t.iter().all(|&t| t > 0))
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
    let n: u64 = grid.iter().product();
    if n == 1 {
        return Ok(MhloSharding::Replicated);
    }
    let devices = if let Some(iota) = devices_text.strip_prefix("<=[") {
        let (reshape_text, transpose) =
            iota.split_once(']').ok_or_else(|| format!("{}: the iota dimensions have no ']'", form()))?;
        let reshape = int_list(reshape_text).ok_or_else(|| format!("{}: iota dimensions must be integers", form()))?;
        let perm = match transpose.trim() {
            "" => None,
            t => Some(
                t.strip_prefix("T(")
                    .and_then(|p| p.strip_suffix(')'))
                    .and_then(int_list)
                    .ok_or_else(|| format!("{}: expected T(permutation) after the iota dimensions", form()))?,
            ),
        };
        if reshape.iter().product::<u64>() != n {
            return Err(format!("{}: the iota dimensions {reshape:?} do not hold the {n} tiles", form()));
        }
        let perm: Option<Vec<usize>> = perm.map(|p| p.into_iter().map(|i| i as usize).collect());
        iota_devices(&reshape, perm.as_deref()).map_err(|e| format!("{}: {e}", form()))?
    } else {
        int_list(devices_text).ok_or_else(|| format!("{}: devices '{devices_text}' are not a list of ids", form()))?
    };
    let (mesh, mut dims) =
        tile_mesh(&grid, &devices).map_err(|e| format!("{}: devices '{devices_text}': {e}", form()))?;
    if replicate_last {
        grid.pop();
        dims.pop();
    }
    Ok(MhloSharding::Tiled { mesh, dims })
}

/// `2,1,2` as integers.
fn int_list(text: &str) -> Option<Vec<u64>> {
    text.split(',').map(|t| t.trim().parse::<u64>().ok()).collect()
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
        let read = |t: &str| {
            let parsed = parse_mhlo_sharding(t).expect(t);
            let mesh = parsed.mesh().map(|m| m.to_string()).unwrap_or_default();
            format!("{mesh} {}", parsed.to_sharding(2))
        };
        assert_eq!(read("{devices=[2,1]0,1}"), "d0=2 [{d0}, {}]");
        assert_eq!(read("{devices=[1,2,2]<=[4] last_tile_dim_replicate}"), "d0=2,d1=2 [{}, {d0}]");
        assert_eq!(read("{devices=[4,1]<=[4]}"), "d0=4 [{d0}, {}]");
        // Transposed: tile (i, j) is on device 2j + i, so rows follow the fast axis d1.
        assert_eq!(read("{devices=[2,2]<=[2,2]T(1,0)}"), "d0=2,d1=2 [{d1}, {d0}]");
        assert_eq!(read("{devices=[2,2]0,2,1,3}"), "d0=2,d1=2 [{d1}, {d0}]");
        // JAX's P('y', None) over a 2x2 mesh: rows over y, replicated over x.
        assert_eq!(read("{devices=[2,1,2]<=[2,2]T(1,0) last_tile_dim_replicate}"), "d0=2,d1=2 [{d1}, {}]");
        // One dimension over both axes, minor first: tile i on device 2(i mod 2) + i div 2.
        assert_eq!(read("{devices=[4,1]<=[2,2]T(1,0)}"), "d0=2,d1=2 [{d1, d0}, {}]");
        assert_eq!(read("{devices=[4,2]<=[2,2,2]T(2,1,0)}"), "d0=2,d1=2,d2=2 [{d2, d1}, {d0}]");
    }

    #[test]
    fn iota_devices_reshape_transpose_and_flatten() {
        assert_eq!(iota_devices(&[2, 2], Some(&[1, 0])), Ok(vec![0, 2, 1, 3]));
        assert_eq!(iota_devices(&[2, 3], Some(&[1, 0])), Ok(vec![0, 3, 1, 4, 2, 5]));
        assert_eq!(iota_devices(&[4], None), Ok(vec![0, 1, 2, 3]));
        assert!(iota_devices(&[2, 2], Some(&[0, 0])).is_err());
    }

    #[test]
    fn mhlo_forms_without_a_tsr_sharding_are_named_in_the_error() {
        let err = |t: &str| parse_mhlo_sharding(t).expect_err(t);
        assert!(err("{maximal device=0}").contains("\"{maximal device=0}\": a value on one device"));
        assert!(err("{devices=[4,1]0,3,1,2}")
            .contains("devices '0,3,1,2': no mesh of named axes numbers them in this order"));
        assert!(err("{devices=[2,1]0,0}").contains("not the devices 0..2 each once"));
        assert!(err("{devices=[2,2]<=[2,2]T(1,1)}").contains("not a permutation"));
        assert!(err("{devices=[2,2]<=[3]}").contains("do not hold the 4 tiles"));
        assert!(err("{manual}").contains("manual"));
        assert!(err("{devices=[2,1]0,1 last_tile_dims={manual}}").contains("has no tsr sharding"));
    }
}
