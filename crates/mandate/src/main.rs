/// mimalloc: the decision path allocates small, short-lived objects on several threads at
/// once, where glibc's allocator spends its time on arena locks (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    mandate::cli::main()
}
