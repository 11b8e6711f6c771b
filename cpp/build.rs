// Builds the C++ kernels and the cxx bridge. -O3 with the baseline x86-64 target so the
// binary runs on any x86-64 machine; hot loops carry `target_clones` (see kernels.cc) so AVX2
// machines get a vectorised clone chosen at load time.
fn main() {
    cxx_build::bridge("src/lib.rs")
        .file("src/kernels.cc")
        .std("c++17")
        .flag_if_supported("-O3")
        .flag_if_supported("-fno-math-errno")
        // ISO C++ turns off FMA contraction by default; matmul and conv2d want fused multiply-adds.
        .flag_if_supported("-ffp-contract=fast")
        .flag_if_supported("-Wall")
        .flag_if_supported("-Wextra")
        // The vector helpers are inlined into their target_clones callers; the ABI note is noise.
        .flag_if_supported("-Wno-psabi")
        .compile("edgerun_kernels");
    println!("cargo:rerun-if-changed=src/kernels.cc");
    println!("cargo:rerun-if-changed=include/kernels.h");
    println!("cargo:rerun-if-changed=src/lib.rs");
}
