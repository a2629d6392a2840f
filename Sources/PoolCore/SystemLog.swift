#if canImport(Glibc)
import Glibc
#endif

/// The system log (the journal picks it up): what a mount running in the
/// background, with no terminal, could not do or had to repair.
public enum SystemLog {
    public enum Level { case error, warning, notice }

    /// One line, "poolfs[PID]: pool NAME: message".
    public static func write(_ level: Level, pool: String, _ message: String) {
        let priority: Int32 = switch level {
        case .error: LOG_ERR
        case .warning: LOG_WARNING
        case .notice: LOG_NOTICE
        }
        let line = "pool '\(pool)': \(message)"
        line.withCString { text in
            // syslog is variadic: its va_list form, with one "%s".
            withVaList([text]) { vsyslog(LOG_DAEMON | priority, "%s", $0) }
        }
    }
}
