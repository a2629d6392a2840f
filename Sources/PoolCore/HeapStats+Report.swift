extension HeapStats {
    /// The text `poolfs heap stats` prints and `.pool/heaps/HEAP/stats` holds.
    public var report: String {
        var out = """
            heap           \(name)
            objects        \(objects)
            allocated      \(ByteSize.format(allocatedBytes))
            active         \(ByteSize.format(activeBytes)) in \(pages) pages, \(spans) spans
            fragmentation  \((fragmentation * 1000).rounded() / 10)%
            delayed frees  \(delayedObjects)
            abandoned      \(abandonedSpans) spans
            placement      \(placement.isEmpty ? "default (first touch)" : placement)
            pages by node  \(pagesPerNode.isEmpty ? "none" : pagesPerNode.sorted { $0.key < $1.key }.map { ($0.key == "untouched" ? "untouched" : "node \($0.key)") + ": \($0.value)" }.joined(separator: ", "))

            """
        let classes = objectsPerClass.sorted { (Int($0.key) ?? .max) < (Int($1.key) ?? .max) }
        if !classes.isEmpty {
            out += "objects per size class: " + classes.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "\n"
        }
        return out
    }
}
