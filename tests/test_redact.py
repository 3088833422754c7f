"""One redacting writer at the edge: whatever is written through it loses the secrets."""

import io
import json

from comfy_cli.client import Client
from comfy_cli.errors import RedactingWriter, Redactor


def test_the_writer_redacts_plain_and_json_escaped_secrets():
    r = Redactor()
    r.add('to"ken\\x')
    r.add("abc")  # too short to be worth hiding
    out = io.StringIO()
    w = RedactingWriter(out, r)
    w.write("plain to\"ken\\x and " + json.dumps({"k": 'to"ken\\x'}) + " abc\n")
    assert out.getvalue() == 'plain *** and {"k": "***"} abc\n'
    assert w.getvalue() == out.getvalue()  # everything else is the stream's


def test_a_client_registers_its_secrets_with_the_redactor_it_is_given():
    r = Redactor()
    Client("http://user:pa55word@127.0.0.1:1", redactor=r)
    c = Client("http://127.0.0.1:1", token="s3cr3t-token", headers=["X-Api-Key: key-123456"], redactor=r)
    text = r.text(f"pa55word Bearer s3cr3t-token key-123456 {c.base}")
    assert text == "*** *** *** http://127.0.0.1:1"
