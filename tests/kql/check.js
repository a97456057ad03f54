// Parses each query of a JSON array with Microsoft's Kusto language service and prints every
// diagnostic; exits 1 when there is any. Usage: node check.js queries.json
'use strict';
const path = require('path');
const fs = require('fs');
const base = path.join(__dirname, 'node_modules', '@kusto', 'language-service-next');
require(path.join(base, 'bridge.js'));
require(path.join(base, 'Kusto.Language.Bridge.js'));

const queries = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
let bad = 0;
for (const q of queries) {
  const diagnostics = Kusto.Language.KustoCode.Parse(q).GetDiagnostics();
  for (let i = 0; i < diagnostics.Count; i++) {
    const d = diagnostics.getItem(i);
    bad++;
    console.log(`${d.Severity} at ${d.Start}: ${d.Message}\n  in: ${q}`);
  }
}
console.log(`checked ${queries.length} queries, ${bad} diagnostics`);
process.exit(bad === 0 ? 0 : 1);
