import type { HistoryPage, HistoryResult, Publication, StreamPosition } from './engine.js'

/*
 * The JSON text (codec `switchboard.v1`) of everything that carries publications: the `message` push, history answers
 * (the WebSocket reply and GET /rooms/:id/messages) and the publications a subscribe recovers.
 * A publication's payload is already JSON text (it is kept as published), so these are
 * concatenations of stored strings: no object graph is rebuilt and nothing is serialised
 * twice, and the cost of a page is one copy of its bytes, bounded by the page's byte cap.
 * Only the small, trusted parts (room, epoch, publisher id) go through JSON.stringify.
 * Raw bytes have no JSON form: they travel as a base64 string with `"encoding":"base64"`.
 */

/** `"data":…` of a publication, and its `encoding` when the payload is bytes. */
function dataJson (publication: Publication): string {
  return publication.kind === 'json'
    ? `"data":${publication.payload}`
    : `"data":"${publication.payload.toString('base64')}","encoding":"base64"`
}

/** `{"offset":…,"data":…,"from":{"id":…},"ts":…}`: the shape of PublicationSchema. */
export function publicationJson (publication: Publication): string {
  return `{"offset":${publication.offset},${dataJson(publication)},"from":{"id":${JSON.stringify(publication.from.id)}},"ts":${publication.ts}}`
}

function publicationsJson (publications: Publication[]): string {
  return `[${publications.map(publicationJson).join(',')}]`
}

/** The `message` push (MessageFrameSchema), built once per publication for every subscriber. */
export function messageText (room: string, epoch: string, publication: Publication): string {
  return `{"type":"message","room":${JSON.stringify(room)},"epoch":${JSON.stringify(epoch)},"offset":${publication.offset},` +
    `${dataJson(publication)},"from":{"id":${JSON.stringify(publication.from.id)}},"ts":${publication.ts}}`
}

/** A history answer (HistoryResultSchema), the same over WebSocket and REST. */
export function historyJson (result: HistoryResult): string {
  return `{"epoch":${JSON.stringify(result.epoch)},"offset":${result.offset},"complete":${result.complete},"publications":${publicationsJson(result.publications)}}`
}

/** A page read back or forward (HistoryPageSchema), the same over WebSocket and REST. */
export function historyPageJson (page: HistoryPage): string {
  return `{"epoch":${JSON.stringify(page.epoch)},"publications":${publicationsJson(page.publications)},"next":${JSON.stringify(page.next)},"top":${JSON.stringify(page.top)}}`
}

/** A subscribe reply's result (SubscribeResultSchema). */
export function subscribedJson (room: string, position: StreamPosition, recovered: boolean, publications: Publication[]): string {
  return `{"room":${JSON.stringify(room)},"epoch":${JSON.stringify(position.epoch)},"offset":${position.offset},"recovered":${recovered},"publications":${publicationsJson(publications)}}`
}

/** A command result that is JSON text already: the reply embeds it as it is. */
export class JsonText {
  constructor (readonly text: string) {}
}
