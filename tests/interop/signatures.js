'use strict';
// Batch oracle for the sign/unsign comparison: one process answers a whole JSON batch on stdin.
// Uses the cookie-signature copy that express-session itself loads.
// Input:  {"sign": [[value, secret], ...], "unsign": [[signed, secret], ...]}
//         a secret is a string, or {"b64": "..."} for raw bytes.
// Output: {"sign": [signed, ...], "unsign": [value or false, ...]}
const signature = require(require.resolve('cookie-signature', { paths: [require.resolve('express-session')] }));

const secretOf = (s) => (typeof s === 'string' ? s : Buffer.from(s.b64, 'base64'));
let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  const batch = JSON.parse(input);
  const out = {
    sign: batch.sign.map(([value, secret]) => signature.sign(value, secretOf(secret))),
    unsign: batch.unsign.map(([signed, secret]) => signature.unsign(signed, secretOf(secret))),
  };
  process.stdout.write(JSON.stringify(out));
});
