fn main() -> std::process::ExitCode {
    mandate::cli::main()
}
