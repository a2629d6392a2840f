/// Sizes as users write them: `4G`, `64K`, `1536M`, `1GiB`, `4096` (binary units).
public enum ByteSize {
    /// Parses a size; throws `PoolError.invalidSize` naming the text and the cause.
    public static func parse(_ text: String) throws -> UInt64 {
        let trimmed = text.trimmingWhitespace()
        guard !trimmed.isEmpty else { throw PoolError.invalidSize(text, reason: "empty") }
        var digits = Substring(trimmed)
        var suffix = ""
        while let last = digits.last, !last.isNumber {
            suffix = String(last) + suffix
            digits = digits.dropLast()
        }
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            throw PoolError.invalidSize(text, reason: "expected a number with an optional unit K, M, G or T")
        }
        let shift: UInt64
        switch suffix.uppercased() {
        case "", "B": shift = 0
        case "K", "KB", "KIB": shift = 10
        case "M", "MB", "MIB": shift = 20
        case "G", "GB", "GIB": shift = 30
        case "T", "TB", "TIB": shift = 40
        case "P", "PB", "PIB": shift = 50
        default:
            throw PoolError.invalidSize(text, reason: "unknown unit '\(suffix)' (use K, M, G or T)")
        }
        guard let value = UInt64(digits) else {
            throw PoolError.invalidSize(text, reason: "too large")
        }
        guard value > 0 else { throw PoolError.invalidSize(text, reason: "must be greater than zero") }
        let (result, overflow) = value.multipliedReportingOverflow(by: 1 << shift)
        guard !overflow, result <= 1 << 56 else { throw PoolError.invalidSize(text, reason: "too large") }
        return result
    }

    /// `4G`, `64K`, `1.5G`: the largest binary unit that leaves at least 1.
    public static func format(_ bytes: UInt64) -> String {
        let units: [(UInt64, String)] = [(1 << 40, "T"), (1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")]
        for (scale, unit) in units where bytes >= scale {
            if bytes % scale == 0 { return "\(bytes / scale)\(unit)" }
            let tenths = (bytes * 10 + scale / 2) / scale
            return "\(tenths / 10).\(tenths % 10)\(unit)"
        }
        return "\(bytes)B"
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s = s.dropFirst() }
        while let l = s.last, l.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}
