import assert from 'node:assert/strict';
import { isStrataError, parseTableList, tableListArgument } from '@strata/sdk';

describe('--tables: names as SQL quotes them', () => {
  const parse = (text: string): string[] => parseTableList(text, 'orders');

  it('cuts at commas, unquotes a name quoted as a whole, and keeps a name whose parts are quoted as written', () => {
    assert.deepEqual(parse(' orders , public.customers'), ['orders', 'public.customers']);
    assert.deepEqual(parse('"orders, 2024"," padded ",say "hi"'), ['orders, 2024', ' padded ', 'say "hi"']);
    assert.deepEqual(parse('"say ""hi"""'), ['say "hi"']);
    // A dot inside quotes belongs to the name; a comma inside them too.
    assert.deepEqual(parse('"a.b".c,a."b.c",sales."q1, 2024","x""y"."z"'), ['"a.b".c', 'a."b.c"', 'sales."q1, 2024"', '"x""y"."z"']);
    assert.deepEqual(parse('a.b.c'), ['a.b.c']);
  });

  it('refuses an unclosed quote and words after a quoted name, naming what it found', () => {
    const usage = (text: string, message: RegExp): void => assert.throws(() => parse(text), (err: unknown) => isStrataError(err, 'USAGE') && message.test(err.message));
    usage('"orders, 2024', /a quoted name without its closing quote \("\\"orders, 2024"\)/);
    usage('a."b.c', /without its closing quote/);
    usage('"orders" 2024', /has "2024" after the quoted name "orders"/);
    usage(' , ', /--tables needs table names/);
  });

  it('writes a list back so that it reads as the same names', () => {
    const names = ['orders', 'orders, 2024', ' padded ', 'say "hi"', '"a.b".c', 'public."v1.2"', 'sales."q1, 2024"', '"unclosed', ''];
    const written = tableListArgument(names);
    assert.equal(written, 'orders,"orders, 2024"," padded ",say "hi","a.b".c,public."v1.2",sales."q1, 2024","""unclosed",""');
    assert.deepEqual(parse(written), names.filter((name) => name !== ''));
  });
});
