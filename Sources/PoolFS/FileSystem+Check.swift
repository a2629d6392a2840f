import PoolCore

/// `poolfs check` for the file system in a pool that is not mounted: its
/// log replays, every page a file names is the file system's, and no run
/// of the file system is named by nothing (a leak, freed by `repair`).
public struct FileSystemReport: Sendable {
    public var files = 0
    public var directories = 0
    public var filePages = 0
    public var logPages = 0
    public var unreferencedPages = 0
    /// Shared pages whose count names an owner that let them go.
    public var overcountedPages = 0
    /// Damage: the file system cannot be trusted.
    public var problems: [String] = []
    /// What a mount killed mid-change left; the next mount repairs it.
    public var leftByCrash: [String] = []
    public var repaired: [String] = []
}

extension FileSystem {
    /// nil when the pool has never been mounted.
    public static func check(pool: Pool, repair: Bool) -> FileSystemReport? {
        guard !pool.rootAddress.isNull else { return nil }
        var report = FileSystemReport()
        let fs: FileSystem
        do {
            fs = try FileSystem(pool: pool, inspecting: true)
        } catch {
            report.problems.append("file system: \(error)")
            return report
        }
        for inode in fs.inodes.values {
            if inode.isDirectory { report.directories += 1 } else { report.files += 1 }
            report.filePages += inode.extents.pageCount
        }
        report.logPages = fs.log.runs.count * fs.log.chunkPages
        do {
            let unreferenced = try fs.unreferencedRuns()
            report.filePages += fs.fragments.runCount
            let pages = unreferenced.reduce(0) { $0 + $1.freedPages }
            let overcounted = unreferenced.reduce(0) { $0 + $1.overcountedPages }
            report.unreferencedPages = pages
            report.overcountedPages = overcounted
            if !unreferenced.isEmpty {
                // A run whose pieces are all named, but not yet cut, frees no page.
                report.leftByCrash.append("file system: \(pages) pages that no file names, and \(overcounted) shared pages "
                    + "counted for an owner that let go, in \(unreferenced.count) runs (the next mount frees and recounts them)")
                if repair {
                    fs.freeFound(unreferenced)
                    report.repaired.append("file system: freed \(pages) unreferenced pages, recounted \(overcounted) shared pages")
                }
            }
        } catch {
            report.problems.append("file system: \(error)")
        }
        return report
    }
}
