import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import messageRoutes from './messages.js'
import { errorResponses, pageOf, PageQuerySchema, type Security } from '../../src/schemas/common.js'
import {
  BanBodySchema, BanSchema, CreateRoomBodySchema, MembershipSchema, RoomParamsSchema, RoomSchema,
  RoomUserParamsSchema, SetMemberBodySchema, UpdateRoomBodySchema
} from '../../src/schemas/rooms.js'

/**
 * Room management for web apps and curl admins. Every rule lives in the room service
 * (src/rooms/service.ts); these handlers only translate HTTP.
 */
const roomRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const userOnly: Security = [{ bearerAuth: [] }]
  const userOrKey: Security = [{ bearerAuth: [] }, { apiKey: [] }]
  const next = <T>(items: T[], limit: number, key: (item: T) => string) => items.length === limit ? key(items[items.length - 1]!) : null

  await app.register(messageRoutes)

  app.post('/', {
    onRequest: app.requireUser,
    schema: {
      tags: ['rooms'], summary: 'Create a room (the creator becomes its owner)', security: userOnly,
      body: CreateRoomBodySchema,
      response: { 201: Type.Ref(RoomSchema), ...errorResponses(400, 401, 403, 409) }
    }
  }, async (request, reply) => {
    const room = await app.rooms.create(request.principal!, request.body)
    request.log.info({ room: room.id }, 'room created')
    return reply.code(201).send(room)
  })

  app.get('/', {
    onRequest: app.requireUser,
    schema: {
      tags: ['rooms'], summary: 'Rooms the caller may see, ordered by id', security: userOnly,
      querystring: PageQuerySchema,
      response: { 200: pageOf(Type.Ref(RoomSchema)), ...errorResponses(400, 401, 403) }
    }
  }, async (request) => {
    const items = await app.rooms.list(request.principal!, request.query)
    return { items, nextCursor: next(items, request.query.limit, r => r.id) }
  })

  app.get('/:id', {
    onRequest: app.authenticate,
    schema: {
      tags: ['rooms'], summary: 'A room\'s settings', security: userOrKey,
      params: RoomParamsSchema,
      response: { 200: Type.Ref(RoomSchema), ...errorResponses(400, 401, 403, 404) }
    }
  }, async (request) => (await app.rooms.access(request.principal!, request.params.id)).room)

  app.patch('/:id', {
    onRequest: app.requireUser,
    schema: {
      tags: ['rooms'], summary: 'Change a room\'s settings (owner)', security: userOnly,
      params: RoomParamsSchema, body: UpdateRoomBodySchema,
      response: { 200: Type.Ref(RoomSchema), ...errorResponses(400, 401, 403, 404) }
    }
  }, async (request) => await app.rooms.update(request.principal!, request.params.id, request.body))

  app.delete('/:id', {
    onRequest: app.requireUser,
    schema: {
      tags: ['rooms'], summary: 'Delete a room with its members and bans (owner)', security: userOnly,
      params: RoomParamsSchema,
      response: { 204: Type.Null(), ...errorResponses(400, 401, 403, 404) }
    }
  }, async (request, reply) => {
    await app.rooms.remove(request.principal!, request.params.id)
    request.log.info({ room: request.params.id }, 'room deleted')
    return reply.code(204).send(null)
  })

  app.get('/:id/members', {
    onRequest: app.authenticate,
    schema: {
      tags: ['members'], summary: 'Members of a room, ordered by user id', security: userOrKey,
      params: RoomParamsSchema, querystring: PageQuerySchema,
      response: { 200: pageOf(Type.Ref(MembershipSchema)), ...errorResponses(400, 401, 403, 404) }
    }
  }, async (request) => {
    const items = await app.rooms.members(request.principal!, request.params.id, request.query)
    return { items, nextCursor: next(items, request.query.limit, m => m.userId) }
  })

  app.put('/:id/members/:userId', {
    onRequest: app.requireUser,
    schema: {
      tags: ['members'],
      summary: 'Add a member or set their role; a user may join a public room by adding themselves as `member`',
      security: userOnly,
      params: RoomUserParamsSchema, body: SetMemberBodySchema,
      response: { 200: Type.Ref(MembershipSchema), 201: Type.Ref(MembershipSchema), ...errorResponses(400, 401, 403, 404, 409) }
    }
  }, async (request, reply) => {
    const { id, userId } = request.params
    const change = await app.rooms.setMember(request.principal!, id, userId, request.body.role)
    request.log.info({ room: id, member: userId, role: change.membership.role, created: change.created }, 'member set')
    return reply.code(change.created ? 201 : 200).send(change.membership)
  })

  app.delete('/:id/members/:userId', {
    onRequest: app.requireUser,
    schema: {
      tags: ['members'], summary: 'Remove a member (or leave, when it is yourself)', security: userOnly,
      params: RoomUserParamsSchema,
      response: { 204: Type.Null(), ...errorResponses(400, 401, 403, 404, 409) }
    }
  }, async (request, reply) => {
    const { id, userId } = request.params
    await app.rooms.removeMember(request.principal!, id, userId)
    request.log.info({ room: id, member: userId }, 'member removed')
    return reply.code(204).send(null)
  })

  app.get('/:id/bans', {
    onRequest: app.requireUser,
    schema: {
      tags: ['members'], summary: 'Bans in a room (moderators and owners)', security: userOnly,
      params: RoomParamsSchema, querystring: PageQuerySchema,
      response: { 200: pageOf(Type.Ref(BanSchema)), ...errorResponses(400, 401, 403, 404) }
    }
  }, async (request) => {
    const items = await app.rooms.bans(request.principal!, request.params.id, request.query)
    return { items, nextCursor: next(items, request.query.limit, b => b.userId) }
  })

  app.put('/:id/bans/:userId', {
    onRequest: app.requireUser,
    // The reason is optional, so `curl -X PUT …/bans/bob` with no body at all is a valid ban.
    preValidation: async (request) => { request.body ??= {} },
    schema: {
      tags: ['members'], summary: 'Ban a user (removes their membership)', security: userOnly,
      params: RoomUserParamsSchema, body: BanBodySchema,
      response: { 200: Type.Ref(BanSchema), 201: Type.Ref(BanSchema), ...errorResponses(400, 401, 403, 404, 409) }
    }
  }, async (request, reply) => {
    const { id, userId } = request.params
    const result = await app.rooms.ban(request.principal!, id, userId, request.body.reason ?? null)
    request.log.info({ room: id, banned: userId }, 'user banned')
    return reply.code(result.created ? 201 : 200).send(result.ban)
  })

  app.delete('/:id/bans/:userId', {
    onRequest: app.requireUser,
    schema: {
      tags: ['members'], summary: 'Lift a ban', security: userOnly,
      params: RoomUserParamsSchema,
      response: { 204: Type.Null(), ...errorResponses(400, 401, 403, 404) }
    }
  }, async (request, reply) => {
    const { id, userId } = request.params
    await app.rooms.unban(request.principal!, id, userId)
    request.log.info({ room: id, unbanned: userId }, 'ban lifted')
    return reply.code(204).send(null)
  })
}

export default roomRoutes
