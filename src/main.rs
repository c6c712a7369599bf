fn main() -> std::process::ExitCode {
    canary_notifier::cli::main()
}
